"""Shards the project did not write: folder layouts recognised without a manifest, and
dataset spec files. Each becomes a manifest dictionary (manifest.py), so the loaders and
`bench.py shards verify/index` see one format.

Recognised from a folder's contents (docs/DATA.md):

  timm / Hugging Face   PREFIX-SPLIT-N.tar with any digit width, plus `_info.json` whose
                        `splits.NAME.{filenames, shard_lengths, num_samples}` give exact
                        counts (timm's reader_wds reads the same file); `validation` is
                        the project's `val`.
  named shards          PREFIX-SPLIT-N.tar without `_info.json` (webdataset's ImageNet
                        example, `imagenet-{train,val}-NNNNNN.tar`): every shard is assumed
                        to hold `samples_per_shard` samples; estimates, which evaluation
                        accepts and training refuses (`bench.py shards index` counts them).

A dataset spec is a YAML file that a suite's `dataset:` names (`*.yaml` / `*.yml`):

    name: imagenet1k                  # optional, default: the file name without .yaml
    num_classes: 1000
    base_url: "pipe:curl -s -L -H 'Authorization:Bearer '$HF_TOKEN https://host/path/"   # optional
    splits:
      train: {shards: "imagenet1k-train-{0000..1023}.tar", samples_per_shard: 1251, num_samples: 1281167}
      val:   {shards: [a.tar, b.tar], shard_lengths: [781, 781]}

or `folder: PATH` (a folder in a layout above) with the fields it lacks, usually
`num_classes`. Shard names resolve against `base_url`, else the spec's folder; absolute
paths, http(s):// URLs and `pipe:` commands are used as they are. Errors name `FILE:LINE`.

Stdlib, PyYAML and braceexpand only (webdataset, which brings torch, only to describe an unrecognised
folder): the suite validator calls this without torch.
"""
from __future__ import annotations

import json
import os
import re
import tarfile
from typing import Any

from amod_bench.data.errors import DatasetError
from amod_bench.data.manifest import FORMAT, MANIFEST, expand_braces

SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<split>[A-Za-z][A-Za-z0-9_]*)-(?P<index>\d+)\.tar$")
INFO = "_info.json"  # timm / Hugging Face distributions
SPLIT_NAMES = {"validation": "val"}  # their split name -> the project's
SPLIT_WORDS = ("train", "validation", "val", "test", "heldout")  # for guessing a split from a shard name
SPEC_SUFFIXES = (".yaml", ".yml")
IMAGENET_1K = re.compile(r"^imagenet(-?1k)?$", re.IGNORECASE)  # prefixes whose class count is known: 1000
SPEC_KEYS = {"name", "num_classes", "class_names", "base_url", "folder", "splits", "defaults"}
SPLIT_KEYS = {"shards", "num_samples", "samples_per_shard", "shard_lengths"}


def is_spec_file(location: str) -> bool:
    return location.endswith(SPEC_SUFFIXES)


def project_split(name: str) -> str:
    return SPLIT_NAMES.get(name, name)


def scan_named_shards(folder: str) -> dict[str, dict[str, list[str]]]:
    """{prefix: {split as named: [file names in index order]}} for PREFIX-SPLIT-N.tar files."""
    found: dict[str, dict[str, dict[int, str]]] = {}
    for entry in os.listdir(folder):
        match = SHARD_NAME.match(entry)
        if match:
            found.setdefault(match["prefix"], {}).setdefault(match["split"], {})[int(match["index"])] = entry
    return {prefix: {split: [files[i] for i in sorted(files)] for split, files in splits.items()}
            for prefix, splits in found.items()}


def _class_manifest(name: str, source: str, num_classes: int, splits: dict, exact: bool) -> dict:
    manifest = {"format": FORMAT, "name": name, "source": source, "num_classes": num_classes,
                "class_names": [str(i) for i in range(num_classes)], "complete": True, "splits": splits}
    if not exact:
        manifest["estimated_counts"] = True  # Dataset.exact_counts: training refuses, evaluation counts as read
    return manifest


def _no_class_count(where: str, folder: str) -> DatasetError:
    return DatasetError(
        f"{where}: no class count (labels come from each sample's .cls); give it in one of two ways:\n"
        f"  a dataset spec file with `folder: {folder}` and `num_classes: K` (docs/DATA.md), named by the suite\n"
        f"  python bench.py shards index {folder} [--num-classes K]   (writes {MANIFEST}; K defaults to the "
        "largest label + 1)")


def _read_info(folder: str) -> dict | None:
    """`_info.json`'s splits as {project split: (filenames, shard_lengths)}, checked; None if absent."""
    path = os.path.join(folder, INFO)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError) as exn:
        raise DatasetError(f"{path}: cannot read it: {exn}") from exn
    splits = info.get("splits") if isinstance(info, dict) else None
    if not isinstance(splits, dict) or not splits:
        raise DatasetError(f"{path}: field 'splits' missing or empty (expected splits.NAME.filenames, "
                           "shard_lengths, num_samples)")
    out = {}
    for name, entry in splits.items():
        field = f"{path}: splits.{name}"
        files = entry.get("filenames") if isinstance(entry, dict) else None
        lengths = entry.get("shard_lengths") if isinstance(entry, dict) else None
        if not (isinstance(files, list) and all(isinstance(f, str) for f in files) and files):
            raise DatasetError(f"{field}.filenames: expected a non-empty list of shard names")
        if not (isinstance(lengths, list) and all(isinstance(n, int) and n >= 0 for n in lengths)):
            raise DatasetError(f"{field}.shard_lengths: expected a list of sample counts")
        if len(lengths) != len(files):
            raise DatasetError(f"{field}: {len(files)} filenames but {len(lengths)} shard_lengths")
        if entry.get("num_samples") is not None and entry["num_samples"] != sum(lengths):
            raise DatasetError(f"{field}.num_samples is {entry['num_samples']}, but shard_lengths sum to "
                               f"{sum(lengths)}")
        if project_split(name) in out:
            raise DatasetError(f"{field}: two splits map to {project_split(name)!r}")
        out[project_split(name)] = (files, lengths)
    return {"name": info.get("name"), "num_classes": info.get("num_classes"), "splits": out}


def folder_manifest(folder: str, *, samples_per_shard: int = 1000, num_classes: int | None = None) -> dict | None:
    """The manifest of a folder without `manifest.json` in a recognised layout, or None if its
    layout is not one of them. Raises DatasetError for a recognised layout with a defect (a gap
    in the numbering, a bad `_info.json`, no known class count)."""
    info = _read_info(folder)
    scanned = scan_named_shards(folder)
    if info is None and not scanned:
        return None
    if len(scanned) > 1 and info is None:
        raise DatasetError(f"{folder}: shards of several datasets ({sorted(scanned)}) and no {MANIFEST}; "
                           "keep one dataset per folder, or name each one's shards in a dataset spec file")
    prefix = next(iter(scanned), None)
    if info is not None:
        splits = {split: {"shards": [{"url": f, "samples": n} for f, n in zip(files, lengths)]}
                  for split, (files, lengths) in info["splits"].items()}
        name, source = info["name"] or prefix, f"shards listed in {INFO} (timm / Hugging Face layout)"
        num_classes, exact = num_classes or info["num_classes"], True
    else:
        (prefix, named), = scanned.items()
        splits = {}
        for split, files in sorted(named.items()):
            indices = [int(SHARD_NAME.match(f)["index"]) for f in files]
            gaps = sorted(set(range(max(indices) + 1)) - set(indices))
            if gaps:
                width = len(SHARD_NAME.match(files[0])["index"])
                missing = f"{prefix}-{split}-{gaps[0]:0{width}d}.tar"
                raise DatasetError(f"{folder}: split {split!r} is missing shard {missing} ({len(gaps)} missing "
                                   "in all)", shard=os.path.join(folder, missing))
            splits[project_split(split)] = {"shards": [{"url": f, "samples": samples_per_shard} for f in files]}
        name, source, exact = prefix, f"shards named {prefix}-SPLIT-N.tar (no manifest; counts estimated)", False
    if num_classes is None and prefix is not None and IMAGENET_1K.match(prefix):
        num_classes = 1000
    if not isinstance(num_classes, int) or num_classes < 1:
        raise _no_class_count(folder, folder)
    return _class_manifest(name, source, num_classes, splits, exact)


# ---- a folder nothing recognises: say what is there and the two ways forward


def guess_split(file_name: str) -> str | None:
    """The split a shard name suggests (`foo_val_3.tar` -> val), or None."""
    words = re.split(r"[^a-z]+", file_name.lower())
    return next((project_split(w) for w in SPLIT_WORDS if w in words), None)


def first_sample_fields(path: str) -> tuple[str, list[str]] | None:
    """(key, member extensions) of a tar's first sample as webdataset groups it, or None if unreadable."""
    import webdataset as wds  # brings torch: only on this error path, never while a suite validates

    try:
        sample = next(iter(wds.tarfile_samples([{"url": path}], handler=wds.reraise_exception)), None)
    except (OSError, tarfile.TarError):
        return None
    return None if sample is None else (sample["__key__"], [k for k in sample if not k.startswith("__")])


def unrecognised_folder_message(folder: str) -> str | None:
    """What a folder of shards in no recognised layout holds, and the two ways to open it; None
    if it holds no .tar files (then it needs preparing from raw images)."""
    tars = sorted(f for f in os.listdir(folder) if f.endswith(".tar"))
    if not tars:
        return None
    guessed: dict[str, int] = {}
    for name in tars:
        split = guess_split(name) or "?"
        guessed[split] = guessed.get(split, 0) + 1
    first = first_sample_fields(os.path.join(folder, tars[0]))
    sample = (f"key {first[0]!r}, members {first[1]}" if first else "unreadable as a tar")
    shown = ", ".join(tars[:5]) + (f", ... ({len(tars)} in all)" if len(tars) > 5 else "")
    return (f"dataset folder {folder} holds {len(tars)} .tar shard(s) but no {MANIFEST}, and their layout is not "
            f"one amod-bench recognises (PREFIX-SPLIT-N.tar, with or without {INFO}):\n"
            f"  found: {shown}\n"
            f"  splits guessed from the names: {', '.join(f'{s} {n}' for s, n in sorted(guessed.items()))}\n"
            f"  first sample of {tars[0]}: {sample}\n"
            "Open it without rewriting the shards, either way:\n"
            "  1. a dataset spec file listing each split's shards (docs/DATA.md, 'Any shards: a dataset spec'), "
            "named by the suite's dataset:\n"
            f"  2. python bench.py shards index {folder} --num-classes K   (counts every sample once and writes "
            f"{MANIFEST}; needs every shard name to say its split)")


def guessed_split_manifest(folder: str, num_classes: int | None) -> dict:
    """For `bench.py shards index`: every .tar of an unrecognised folder under the split its
    name suggests, counts to be filled in; refused with the folder's description if a name
    suggests no split."""
    tars = sorted(f for f in os.listdir(folder) if f.endswith(".tar"))
    if not tars or any(guess_split(f) is None for f in tars):
        raise DatasetError(unrecognised_folder_message(folder) or f"{folder} holds no .tar shards")
    splits: dict[str, dict] = {}
    for name in tars:
        splits.setdefault(guess_split(name), {"shards": []})["shards"].append({"url": name, "samples": 0})
    return _class_manifest(os.path.basename(folder), f"shards in {folder}, splits guessed from their names",
                           num_classes or 1, splits, exact=False)


# ---- dataset spec files


class _Spec:
    """A parsed spec file and where each field sits, for `FILE:LINE: field: problem` errors."""

    def __init__(self, path: str):
        import yaml

        self.path = path
        try:
            with open(path) as f:
                text = f.read()
            self.data = yaml.safe_load(text)
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except (OSError, yaml.YAMLError) as exn:
            raise DatasetError(f"{path}: cannot read the dataset spec: {exn}") from exn
        self.lines: dict[tuple, int] = {}
        if root is not None:
            self._walk(root, ())

    def _walk(self, node, field: tuple) -> None:
        import yaml

        self.lines.setdefault(field, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                self.lines[field + (key.value,)] = key.start_mark.line + 1
                self._walk(value, field + (key.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                self._walk(value, field + (i,))

    def error(self, field: tuple, problem: str) -> DatasetError:
        line = next((self.lines[field[:n]] for n in range(len(field), -1, -1) if field[:n] in self.lines), 1)
        name = ".".join(str(f) for f in field)
        return DatasetError(f"{self.path}:{line}: {name + ': ' if name else ''}{problem}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _split_shards(spec: _Spec, split: str, entry: Any, counts_required: bool) -> tuple[list[dict], bool]:
    """A spec split -> ([{"url", "samples"}] with brace patterns expanded, counts exact?)."""
    at = ("splits", split)
    if not isinstance(entry, dict):
        raise spec.error(at, "expected a mapping with `shards` and sample counts")
    unknown = set(entry) - SPLIT_KEYS
    if unknown:
        raise spec.error(at + (sorted(unknown)[0],), f"unknown field; allowed: {', '.join(sorted(SPLIT_KEYS))}")
    patterns = entry.get("shards")
    patterns = [patterns] if isinstance(patterns, str) else patterns
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise spec.error(at + ("shards",), "expected a shard name, URL or brace pattern, or a list of them")
    urls = [url for pattern in patterns for url in expand_braces(pattern)]
    lengths, per_shard, total = entry.get("shard_lengths"), entry.get("samples_per_shard"), entry.get("num_samples")
    for key, value in (("samples_per_shard", per_shard), ("num_samples", total)):
        if value is not None and not _positive_int(value):
            raise spec.error(at + (key,), f"expected a positive integer, got {value!r}")
    if lengths is not None:
        if not isinstance(lengths, list) or not all(_positive_int(n) for n in lengths):
            raise spec.error(at + ("shard_lengths",), "expected a list of positive sample counts, one per shard")
        if len(lengths) != len(urls):
            raise spec.error(at + ("shard_lengths",), f"{len(lengths)} counts for {len(urls)} shards")
        if total is not None and total != sum(lengths):
            raise spec.error(at + ("num_samples",), f"{total}, but shard_lengths sum to {sum(lengths)}")
        return [{"url": u, "samples": n} for u, n in zip(urls, lengths)], True
    if per_shard is not None:
        counts = [per_shard] * len(urls)
        if total is not None:  # the last shard holds the rest (ImageNet's last train shard: 167)
            counts[-1] = total - per_shard * (len(urls) - 1)
            if not 0 < counts[-1] <= per_shard:
                raise spec.error(at + ("num_samples",), f"{total} samples do not fit {len(urls)} shards of "
                                                        f"{per_shard} with a smaller last one")
        return [{"url": u, "samples": n} for u, n in zip(urls, counts)], True
    if total is not None:  # near-equal estimates: enough for evaluation, not for training
        k = len(urls)
        return [{"url": u, "samples": total // k + (i < total % k)} for i, u in enumerate(urls)], False
    if not counts_required:  # `bench.py shards index` is about to count them
        return [{"url": u, "samples": 0} for u in urls], False
    raise spec.error(at, "no sample counts: give shard_lengths, samples_per_shard (with num_samples for a "
                         f"shorter last shard) or num_samples, or count them once: python bench.py shards index "
                         f"{spec.path}")


def spec_manifest(path: str, counts_required: bool = True) -> tuple[dict, str]:
    """(manifest, base for relative shard names) of a dataset spec file; `counts_required=False`
    accepts splits without sample counts (for `bench.py shards index`)."""
    spec = _Spec(path)
    data, here = spec.data, os.path.dirname(os.path.abspath(path))
    if not isinstance(data, dict):
        raise spec.error((), "expected a mapping with `splits` (or `folder`) and `num_classes`")
    unknown = set(data) - SPEC_KEYS
    if unknown:
        raise spec.error((sorted(unknown)[0],), f"unknown field; allowed: {', '.join(sorted(SPEC_KEYS))}")
    num_classes = data.get("num_classes")
    if num_classes is not None and not _positive_int(num_classes):
        raise spec.error(("num_classes",), f"expected a positive integer, got {num_classes!r}")
    if ("folder" in data) == ("splits" in data):
        raise spec.error((), "give either `folder` (shards in a recognised layout) or `splits` (each split's "
                             "shards), not both or neither")
    name = data.get("name") or os.path.splitext(os.path.basename(path))[0]
    if "folder" in data:
        folder = data["folder"]
        if not isinstance(folder, str):
            raise spec.error(("folder",), "expected a folder path")
        folder = os.path.join(here, os.path.expanduser(folder))
        if not os.path.isdir(folder):
            raise spec.error(("folder",), f"{folder} is not a folder")
        try:
            manifest = folder_manifest(folder, num_classes=num_classes)
        except DatasetError as exn:
            raise spec.error(("folder",), str(exn)) from exn
        if manifest is None:
            raise spec.error(("folder",), unrecognised_folder_message(folder) or f"{folder} holds no shards")
        base = folder
    else:
        if not isinstance(data["splits"], dict) or not data["splits"]:
            raise spec.error(("splits",), "expected a mapping split name -> {shards, counts}")
        if num_classes is None:
            raise spec.error(("num_classes",), "missing: how many classes the .cls labels index")
        splits, exact = {}, True
        for split, entry in data["splits"].items():
            shards, split_exact = _split_shards(spec, str(split), entry, counts_required)
            splits[project_split(str(split))] = {"shards": shards}
            exact = exact and split_exact
        manifest = _class_manifest(name, f"dataset spec {path}", num_classes, splits, exact)
        base = data.get("base_url") or here
        if not isinstance(base, str):
            raise spec.error(("base_url",), "expected a URL, pipe: command prefix or folder")
    manifest["name"] = name
    class_names = data.get("class_names")
    if class_names is not None:
        if not isinstance(class_names, list) or len(class_names) != manifest["num_classes"]:
            raise spec.error(("class_names",), f"expected a list of {manifest['num_classes']} names")
        manifest["class_names"] = [str(c) for c in class_names]
    if data.get("defaults") is not None:
        if not isinstance(data["defaults"], dict):
            raise spec.error(("defaults",), "expected a mapping (augment, crop_pct)")
        manifest["defaults"] = data["defaults"]
    return manifest, base
