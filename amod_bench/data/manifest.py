"""The dataset format: manifests, shard URLs and the opened `Dataset`.

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
      "build": {...},                   # how it was written (for resuming and provenance)
      "estimated_counts": true          # only in memory, for layouts.py's estimates
    }

Shard `url`s are relative to `base_url` when set, otherwise to the manifest's folder; an
absolute path, an `http(s)://` URL or a `pipe:` command is used as it is. A `url` may be a
brace pattern; its `samples` then counts each expanded shard, so a hand-written manifest for
ImageNet served over HTTP is exact in two entries per split:

    "train": {"shards": [{"url": "imagenet-train-{000000..001280}.tar", "samples": 1000},
                         {"url": "imagenet-train-001281.tar", "samples": 167}]}

Shards written by others open too, without a manifest (layouts.py builds one in memory):
a timm / Hugging Face folder with `_info.json`, ImageNet-named shards, or a dataset spec
file. `opening.py` resolves a suite's dataset spec to a `Dataset`.

This module is stdlib-only, so the suite validator reads manifests without importing torch.
"""
from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

from amod_bench.data.errors import DatasetError

FORMAT = "amod-bench-shards/1"
MANIFEST = "manifest.json"


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


def write_manifest(folder: str, manifest: dict, file_name: str = MANIFEST) -> None:
    """Write `folder/manifest.json` atomically (temp file + rename), so readers never see half."""
    path = os.path.join(folder, file_name)
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


def check_manifest(manifest: Any, where: str) -> None:
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
    """

    def __init__(self, manifest: dict, *, root: str, base: str):
        self.manifest = manifest
        self.root = root
        self.base = base
        # False for estimates (a named folder without _info.json, a spec with only num_samples)
        self.exact_counts: bool = not manifest.get("estimated_counts", False)
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
