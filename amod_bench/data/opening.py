"""`open_dataset` and `missing_dataset_message`: a suite's dataset spec -> a `Dataset`, or
what is missing and how to get it.

A spec is `bundled:NAME`, a folder (with `manifest.json`, or in a layout layouts.py
recognises), a manifest's path or http(s) URL, or a dataset spec file (`*.yaml`).

Stdlib-only at import (bundled sets are written lazily), so the suite validator calls
`missing_dataset_message` without importing torch.
"""
from __future__ import annotations

import os
import shlex

from amod_bench.data.errors import DatasetError
from amod_bench.data.layouts import folder_manifest, is_spec_file, spec_manifest, unrecognised_folder_message
from amod_bench.data.manifest import (MANIFEST, Dataset, check_manifest, expand_braces, is_remote, join_url,
                                      read_manifest)

BUNDLED_PREFIX = "bundled:"


def _bundled_folder(name: str, cache_dir: str | None) -> str:
    from amod_bench.data import bundled  # writes the set on first use

    return str(bundled.ensure_bundled(name, cache_dir=cache_dir))


def open_dataset(spec: str, *, samples_per_shard: int = 1000, num_classes: int | None = None,
                 base_url: str | None = None, cache_dir: str | None = None) -> Dataset:
    """Open a dataset for streaming.

    Args:
        spec: `bundled:digits` or `bundled:mnist5k` (written into the cache on first use);
            a folder holding `manifest.json` (or the manifest's path, or its http(s) URL);
            a folder without one in a layout layouts.py recognises (timm / Hugging Face
            with `_info.json`, PREFIX-SPLIT-N.tar); or a dataset spec file (`*.yaml`).
        samples_per_shard: shard size assumed for named shards without counts.
        num_classes: class count for a folder without a manifest (a folder with
            `_info.json` or an ImageNet prefix knows it); for a manifest it must match if given.
        base_url: fetch shards from here instead of the manifest's folder (e.g. an HTTP
            server that serves the same files).
        cache_dir: where bundled sets live (default `$AMOD_BENCH_CACHE` or
            `~/.cache/amod_bench/datasets`).

    Raises:
        DatasetError: the spec does not resolve; the message says how to prepare it.
    """
    if spec.startswith(BUNDLED_PREFIX):
        folder = _bundled_folder(spec[len(BUNDLED_PREFIX):], cache_dir)
        manifest_location, root = os.path.join(folder, MANIFEST), folder
    elif spec.startswith(("http://", "https://")):
        manifest_location = spec if spec.endswith(".json") else spec.rstrip("/") + "/" + MANIFEST
        root = manifest_location.rsplit("/", 1)[0]
    else:
        path = os.path.abspath(os.path.expanduser(spec))
        if is_spec_file(path) and os.path.isfile(path):
            manifest, base = spec_manifest(path)
            return Dataset(manifest, root=path, base=base_url or base)
        if os.path.isfile(path):
            manifest_location, root = path, os.path.dirname(path)
        elif os.path.isfile(os.path.join(path, MANIFEST)):
            manifest_location, root = os.path.join(path, MANIFEST), path
        else:
            manifest = folder_manifest(path, samples_per_shard=samples_per_shard, num_classes=num_classes) \
                if os.path.isdir(path) else None
            if manifest is None:
                raise DatasetError(missing_dataset_message(spec, cache_dir=cache_dir) or f"cannot open {spec}")
            return Dataset(manifest, root=path, base=base_url or path)
    manifest = read_manifest(manifest_location)
    check_manifest(manifest, manifest_location)
    if not manifest.get("complete", False):
        raise DatasetError(f"{manifest_location}: the dataset is incomplete (its writing was interrupted); "
                           f"finish it with: {manifest.get('build', {}).get('command', 'python bench.py shards ...')}")
    if num_classes is not None and num_classes != manifest["num_classes"]:
        raise DatasetError(f"{manifest_location}: {manifest['num_classes']} classes, but {num_classes} were asked for")
    base = base_url or manifest.get("base_url") or root
    return Dataset(manifest, root=root, base=base)


# ---- missing_dataset_message: fast checks plus the command that prepares what is missing

# source -> (folder-name hints, extra options) for the `bench.py shards` command
_SOURCE_HINTS: list[tuple[str, tuple[str, ...]]] = [
    ("flowers102", ("flowers",)),
    ("pets", ("pet",)),
    ("cars", ("car",)),
    ("imagenet", ("imagenet", "ilsvrc")),
]


def guess_source(folder: str) -> str:
    """Which `bench.py shards` source a dataset folder name suggests (imagefolder if none)."""
    name = os.path.basename(os.path.normpath(folder)).lower()
    for source, hints in _SOURCE_HINTS:
        if any(h in name for h in hints):
            return source
    return "imagefolder"


def prepare_command(folder: str) -> str:
    """The `python bench.py shards ...` command that writes the dataset `folder` (docs/DATA.md)."""
    folder = os.path.abspath(os.path.expanduser(folder))
    source = guess_source(folder)
    out = shlex.quote(folder)
    if source == "imagenet":
        return f"python bench.py shards imagenet --root /path/to/ILSVRC2012 --out {out}"
    if source == "imagefolder":
        return (f"python bench.py shards imagefolder --root /path/to/imagefolder_tree --out {out} "
                "--heldout-fraction 0.1")
    raw = shlex.quote(folder.rstrip("/") + "-raw")
    download = "" if source == "cars" else " --download"
    return f"python bench.py shards {source} --root {raw}{download} --out {out} --heldout-fraction 0.1"


def missing_local_shard(manifest: dict, base: str) -> str | None:
    """The first local shard file a manifest names that is not there, or None."""
    if is_remote(base):
        return None
    for entry in manifest["splits"].values():
        for shard in entry["shards"]:
            for url in expand_braces(join_url(base, shard["url"])):
                if not is_remote(url) and not os.path.isfile(url):
                    return url
    return None


def missing_dataset_message(spec: str, *, cache_dir: str | None = None) -> str | None:
    """None if `spec` resolves to a readable dataset; otherwise what is missing and how to get
    it: the exact `python bench.py shards ...` command where there are no shards, the ways to
    open shards in a layout not recognised, the `FILE:LINE` of a bad dataset spec field.

    Fast and side-effect free: it reads at most one manifest, `_info.json` or spec file (and
    the first tar header of an unrecognised folder) and stats local shard files; it never
    builds a loader, a bundled set or a network connection.
    """
    if spec.startswith(BUNDLED_PREFIX):
        from amod_bench.data.bundled import BUNDLED, bundled_requirement_missing

        name = spec[len(BUNDLED_PREFIX):]
        if name not in BUNDLED:
            return f"unknown bundled dataset {spec!r}; bundled sets: {', '.join(BUNDLED_PREFIX + n for n in BUNDLED)}"
        return bundled_requirement_missing(name)
    if spec.startswith(("http://", "https://")):
        return None  # checked when opened; the validator stays offline
    path = os.path.abspath(os.path.expanduser(spec))
    if is_spec_file(path):
        if not os.path.isfile(path):
            return f"dataset spec file {path} does not exist"
        try:
            manifest, base = spec_manifest(path)
        except DatasetError as exn:
            return str(exn)
        missing = missing_local_shard(manifest, base)
        return f"dataset spec {path} names shard {missing}, which does not exist" if missing else None
    manifest_path = path if os.path.isfile(path) else os.path.join(path, MANIFEST)
    folder = os.path.dirname(manifest_path)
    if not os.path.isfile(manifest_path):
        if not os.path.isdir(path):
            return f"dataset folder {path} does not exist; prepare it with:\n  {prepare_command(path)}"
        try:
            manifest = folder_manifest(path)
        except DatasetError as exn:
            return str(exn)
        if manifest is None:
            return unrecognised_folder_message(path) or (
                f"dataset folder {path} has no manifest.json and no .tar shards; prepare it with:\n"
                f"  {prepare_command(path)}")
        missing = missing_local_shard(manifest, path)
        return f"dataset {path} is missing shard {missing}" if missing else None
    try:
        manifest = read_manifest(manifest_path)
        check_manifest(manifest, manifest_path)
    except DatasetError as exn:
        return f"{exn}; rewrite it with:\n  {prepare_command(folder)}"
    command = manifest.get("build", {}).get("command") or prepare_command(folder)
    if not manifest.get("complete", False):
        return f"dataset {folder} is incomplete (writing was interrupted); finish it with:\n  {command}"
    missing = missing_local_shard(manifest, manifest.get("base_url") or folder)
    if missing:
        return f"dataset {folder} is missing shard {missing}; rewrite the missing shards with:\n  {command}"
    return None
