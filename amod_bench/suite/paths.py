"""Paths as a suite writes them: dataset and checkpoint specs resolved against the working
directory at load time, short dataset names for cell ids, and the inputs missing here."""
from __future__ import annotations

import os

from amod_bench.data import missing_dataset_message

from .problems import Where
from .schema import Suite


def dataset_short_name(spec: str) -> str:
    """`bundled:digits` -> `digits`; a folder -> its base name; a dataset spec file -> its name
    without `.yaml` / `.yml`."""
    if spec.startswith("bundled:"):
        return spec.split(":", 1)[1]
    name = os.path.basename(os.path.normpath(spec))
    return (name.rsplit(".", 1)[0] if name.endswith((".yaml", ".yml")) else name) or "data"


def resolve_path(spec: str, base_dir: str) -> str:
    """A path as written in a suite -> absolute (URIs unchanged)."""
    if "://" in spec:
        return spec
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(spec)))


def dataset_path(spec: str, base_dir: str) -> str:
    """What amod_bench.data opens: `bundled:` specs and URLs as written, folders absolute."""
    if spec.startswith("bundled:") or "://" in spec:
        return spec
    return resolve_path(spec, base_dir)


def missing_inputs(suite: Suite) -> list[tuple[str, Where]]:
    """(message, where) for each dataset or checkpoint file of the suite that is not on this machine."""
    out, seen = [], set()
    for stage in suite.stages:
        specs = stage.grid.dataset + tuple(v for rule in stage.include for v in rule.get("dataset", ()))
        for spec in dict.fromkeys(specs):
            target = dataset_path(spec, suite.base_dir)
            if target in seen:
                continue
            seen.add(target)
            if message := missing_dataset_message(target):
                out.append((message, stage.at("grid.dataset")))
        if stage.pretrained not in (None, "timm"):
            file = resolve_path(stage.pretrained, suite.base_dir)
            if file not in seen and "://" not in file and not os.path.isfile(file):
                seen.add(file)
                out.append((f"pretrained checkpoint {file} does not exist", stage.at("pretrained")))
    return out
