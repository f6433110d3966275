"""Dataset manifests, shard URLs, `open_dataset` and `missing_dataset_message`.

A dataset is a folder of WebDataset tar shards plus `manifest.json`:

    {
      "format": "amod-bench-shards/1",
      "name": "digits",
      "source": "sklearn.datasets.load_digits",
      "num_classes": 10,
      "class_names": ["0", "1", ...],
      "image_format": "png",
      "base_url": null,                 # optional: shards are fetched from here (http(s)://, pipe:)
      "complete": true,                 # false while `bench.py shards` is still writing
      "splits": {
        "train": {"num_samples": 1295,
                  "shards": [{"url": "digits-train-000000.tar", "samples": 162, "bytes": 337920}, ...]},
        "val": {...}, "heldout": {...}
      },
      "defaults": {"augment": {"hflip": false, ...}, "crop_pct": 1.0},   # loader defaults
      "build": {...}                    # how it was written (for resuming and provenance)
    }

Shard `url`s are relative to `base_url` when set, otherwise to the manifest's folder; an
absolute path, an `http(s)://` URL or a `pipe:` command is used as it is. A `url` may be a
brace pattern; its `samples` then counts each expanded shard, so a hand-written manifest for
ImageNet served over HTTP is exact in two entries per split:

    "train": {"shards": [{"url": "imagenet-train-{000000..001280}.tar", "samples": 1000},
                         {"url": "imagenet-train-001281.tar", "samples": 167}]}

A folder without a manifest whose files follow ImageNet's naming
(`imagenet-train-{000000..001281}.tar`, `imagenet-val-{000000..000049}.tar`, or any
`PREFIX-SPLIT-NNNNNN.tar`) opens too: every shard is assumed to hold `samples_per_shard`
samples (1000, the ImageNet convention) and there are `num_classes` (1000) classes. Those
counts are estimates (ImageNet's last train shard holds 167); `bench.py shards index DIR`
counts every shard once and writes an exact manifest.

This module is stdlib-only, so the suite validator can call `missing_dataset_message`
without importing torch.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import urllib.request
from typing import Any

from amod_bench.data.errors import DatasetError

FORMAT = "amod-bench-shards/1"
MANIFEST = "manifest.json"
SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{6})\.tar$")
BUNDLED_PREFIX = "bundled:"


def shard_file_name(prefix: str, split: str, index: int) -> str:
    """`digits-train-000003.tar`: ImageNet's shard naming."""
    return f"{prefix}-{split}-{index:06d}.tar"


def is_remote(url: str) -> bool:
    """True for URLs that webdataset opens through a subprocess (http(s)://, pipe:, ...)."""
    return "://" in url or url.startswith("pipe:")


def join_url(base: str, name: str) -> str:
    """Resolve a manifest's shard entry against the dataset's base (folder, URL or pipe:)."""
    if is_remote(name) or os.path.isabs(name):
        return name
    if base.endswith(("/", " ")):  # "pipe:cat /data/" or "pipe:curl -s " style bases
        return base + name
    return base + "/" + name if is_remote(base) else os.path.join(base, name)


def expand_braces(url: str) -> list[str]:
    """`x-{000000..000009}.tar` -> 10 names (webdataset's brace notation); other URLs unchanged."""
    if "{" not in url:
        return [url]
    import braceexpand  # a webdataset dependency, pure Python

    return list(braceexpand.braceexpand(url))


def write_manifest(folder: str, manifest: dict) -> None:
    """Write `folder/manifest.json` atomically (temp file + rename), so readers never see half."""
    path = os.path.join(folder, MANIFEST)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def read_manifest(location: str) -> dict:
    """Load a manifest from a local path or an http(s) URL."""
    try:
        if location.startswith(("http://", "https://")):
            with urllib.request.urlopen(location, timeout=60) as response:
                return json.loads(response.read().decode("utf-8"))
        with open(location) as f:
            return json.load(f)
    except (OSError, ValueError) as exn:
        raise DatasetError(f"cannot read dataset manifest {location}: {exn}") from exn


def _check_manifest(manifest: Any, where: str) -> None:
    def bad(why: str):
        raise DatasetError(f"{where}: not a valid amod-bench manifest: {why}")

    if not isinstance(manifest, dict):
        bad("not a JSON object")
    if manifest.get("format") != FORMAT:
        bad(f"format {manifest.get('format')!r}, expected {FORMAT!r}")
    for key, kind in (("num_classes", int), ("class_names", list), ("splits", dict)):
        if not isinstance(manifest.get(key), kind):
            bad(f"{key!r} missing or not a {kind.__name__}")
    if len(manifest["class_names"]) != manifest["num_classes"]:
        bad(f"{len(manifest['class_names'])} class_names for num_classes {manifest['num_classes']}")
    for split, entry in manifest["splits"].items():
        shards = entry.get("shards") if isinstance(entry, dict) else None
        if not isinstance(shards, list) or not all(
                isinstance(s, dict) and isinstance(s.get("url"), str) and isinstance(s.get("samples"), int)
                for s in shards):
            bad(f"split {split!r} needs a list of shards {{'url': str, 'samples': int}}")


class Dataset:
    """An opened shard dataset: class names, splits, exact sample counts and shard URLs.

    Built by `open_dataset`; holds no open files, so it pickles into loader workers.

    Args:
        manifest: the manifest dictionary (see the module docstring).
        root: the folder (or URL) the manifest came from.
        base: where relative shard URLs resolve (the manifest's `base_url`, or `root`).
        exact_counts: False when counts are estimates (ImageNet-named folder, no manifest).
    """

    def __init__(self, manifest: dict, *, root: str, base: str, exact_counts: bool = True):
        self.manifest = manifest
        self.root = root
        self.base = base
        self.exact_counts = exact_counts
        self.name: str = manifest.get("name") or os.path.basename(root.rstrip("/"))
        self.source: str = manifest.get("source", "unknown")
        self.num_classes: int = manifest["num_classes"]
        self.class_names: list[str] = list(manifest["class_names"])
        self.splits: tuple[str, ...] = tuple(manifest["splits"])
        defaults = manifest.get("defaults") or {}
        self.augment_defaults: dict = dict(defaults.get("augment") or {})  # merged under train_loader's augment
        self.crop_pct: float | None = defaults.get("crop_pct")  # eval resize = img_size / crop_pct

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={self.num_samples(s)}" for s in self.splits)
        return f"Dataset({self.name!r}, {self.num_classes} classes, {counts}, root={self.root!r})"

    def _split(self, split: str) -> dict:
        if split not in self.manifest["splits"]:
            raise DatasetError(f"dataset {self.root} has no split {split!r}; its splits: {list(self.splits)}")
        return self.manifest["splits"][split]

    def shards(self, split: str) -> list[tuple[str, int]]:
        """[(url, samples)] in manifest order, brace patterns expanded."""
        return [(join_url(self.base, url), int(s["samples"]))
                for s in self._split(split)["shards"] for url in expand_braces(s["url"])]

    def shard_urls(self, split: str) -> list[str]:
        return [url for url, _ in self.shards(split)]

    def num_samples(self, split: str) -> int:
        """Exact epoch size from the manifest (an estimate when `exact_counts` is False)."""
        return sum(n for _, n in self.shards(split))


def _bundled_folder(name: str, cache_dir: str | None) -> str:
    from amod_bench.data import bundled  # writes the set on first use

    return str(bundled.ensure_bundled(name, cache_dir=cache_dir))


def _scan_named_shards(folder: str) -> dict[str, dict[str, list[str]]]:
    """{prefix: {split: [file names sorted by index]}} for PREFIX-SPLIT-NNNNNN.tar files."""
    found: dict[str, dict[str, dict[int, str]]] = {}
    for entry in os.listdir(folder):
        match = SHARD_NAME.match(entry)
        if match:
            found.setdefault(match["prefix"], {}).setdefault(match["split"], {})[int(match["index"])] = entry
    return {prefix: {split: [files[i] for i in sorted(files)] for split, files in splits.items()}
            for prefix, splits in found.items()}


def _named_shards_manifest(folder: str, samples_per_shard: int, num_classes: int | None) -> dict:
    scanned = _scan_named_shards(folder)
    if len(scanned) > 1:
        raise DatasetError(f"{folder}: shards of several datasets ({sorted(scanned)}) and no manifest.json; "
                           "keep one dataset per folder")
    (prefix, splits), = scanned.items()
    for split, files in splits.items():
        indices = [int(SHARD_NAME.match(f)["index"]) for f in files]
        gaps = sorted(set(range(max(indices) + 1)) - set(indices))
        if gaps:
            raise DatasetError(f"{folder}: split {split!r} is missing shard "
                               f"{shard_file_name(prefix, split, gaps[0])} ({len(gaps)} missing in all)",
                               shard=os.path.join(folder, shard_file_name(prefix, split, gaps[0])))
    num_classes = num_classes or 1000
    return {
        "format": FORMAT, "name": prefix, "source": f"shards named {prefix}-SPLIT-NNNNNN.tar (no manifest)",
        "num_classes": num_classes, "class_names": [str(i) for i in range(num_classes)],
        "complete": True,
        "splits": {split: {"shards": [{"url": f, "samples": samples_per_shard} for f in files]}
                   for split, files in sorted(splits.items())},
    }


def open_dataset(spec: str, *, samples_per_shard: int = 1000, num_classes: int | None = None,
                 base_url: str | None = None, cache_dir: str | None = None) -> Dataset:
    """Open a dataset for streaming.

    Args:
        spec: `bundled:digits` or `bundled:mnist5k` (written into the cache on first use);
            a folder holding `manifest.json` (or the manifest's path, or its http(s) URL);
            or a folder of ImageNet-named shards without a manifest.
        samples_per_shard: shard size assumed for a folder without a manifest.
        num_classes: class count for a folder without a manifest (default 1000); for a
            manifest it must match if given.
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
        if os.path.isfile(path):
            manifest_location, root = path, os.path.dirname(path)
        elif os.path.isfile(os.path.join(path, MANIFEST)):
            manifest_location, root = os.path.join(path, MANIFEST), path
        elif os.path.isdir(path) and _scan_named_shards(path):
            manifest = _named_shards_manifest(path, samples_per_shard, num_classes)
            return Dataset(manifest, root=path, base=base_url or path, exact_counts=False)
        else:
            raise DatasetError(missing_dataset_message(spec, cache_dir=cache_dir) or f"cannot open {spec}")
    manifest = read_manifest(manifest_location)
    _check_manifest(manifest, manifest_location)
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


def missing_dataset_message(spec: str, *, cache_dir: str | None = None) -> str | None:
    """None if `spec` resolves to a readable dataset; otherwise what is missing and the exact
    `python bench.py shards ...` command that prepares it.

    Fast and side-effect free: it reads at most one manifest and stats local shard files; it
    never builds a loader, a bundled set or a network connection.
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
    manifest_path = path if os.path.isfile(path) else os.path.join(path, MANIFEST)
    folder = os.path.dirname(manifest_path)
    if not os.path.isfile(manifest_path):
        if os.path.isdir(path) and _scan_named_shards(path):
            try:
                _named_shards_manifest(path, 1000, None)
            except DatasetError as exn:
                return str(exn)
            return None
        what = "has no manifest.json and no PREFIX-SPLIT-NNNNNN.tar shards" if os.path.isdir(path) else "does not exist"
        return f"dataset folder {path} {what}; prepare it with:\n  {prepare_command(path)}"
    try:
        manifest = read_manifest(manifest_path)
        _check_manifest(manifest, manifest_path)
    except DatasetError as exn:
        return f"{exn}; rewrite it with:\n  {prepare_command(folder)}"
    command = manifest.get("build", {}).get("command") or prepare_command(folder)
    if not manifest.get("complete", False):
        return f"dataset {folder} is incomplete (writing was interrupted); finish it with:\n  {command}"
    base = manifest.get("base_url") or folder
    if not is_remote(base):
        for entry in manifest["splits"].values():
            for url in (join_url(base, u) for shard in entry["shards"] for u in expand_braces(shard["url"])):
                if not is_remote(url) and not os.path.isfile(url):
                    return f"dataset {folder} is missing shard {url}; rewrite the missing shards with:\n  {command}"
    return None
