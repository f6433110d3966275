"""Writing datasets as WebDataset shards (checking them back: checking.py).

`write_shards(source, out, ...)`:
  1. plan: the source's pools become train / val (/ heldout) with a seeded stratified split
     (val from the whole set when the source has no official val split; heldout carved
     from train), each split shuffled with the seed (MNIST arrives sorted by label), then
     cut into shards of `maxcount` samples (or `num_shards` near-equal shards). The plan is a
     pure function of the source and the options, so shard i always holds the same samples.
  2. write: each shard is written by `webdataset.ShardWriter` into `NAME.tmpPID` and renamed
     to `NAME` when closed, so a shard file under its final name is always complete. After
     each shard the manifest (`complete: false` while writing) records it with its sample
     count and size. Shards run in parallel worker processes.
  3. resume: a rerun with the same options keeps every shard that the manifest records and
     whose file has the recorded size, and writes the rest; other options are refused
     unless `overwrite=True`.
  4. finish: `complete: true`. `checking.verify_shards` then reads every sample back.

Samples are `{"__key__": key, "jpg" | "png": bytes, "cls": label}`; tar members are
`KEY.cls` and `KEY.jpg`, readable by stock `tar` and plain `webdataset`. Encoded JPEG files
are copied unchanged when the target is JPEG and no resize is asked for.
"""
from __future__ import annotations

import concurrent.futures as cf
import glob
import io
import json
import os
import time

import numpy as np
import webdataset as wds

from amod_bench.data.errors import DatasetError
from amod_bench.data.layouts import scan_named_shards
from amod_bench.data.manifest import FORMAT, MANIFEST, read_manifest, shard_file_name, write_manifest
from amod_bench.data.reading import progress_bar
from amod_bench.data.sources import Item, Source, stratified_split

DEFAULT_MAXCOUNT = 1000  # ImageNet convention: 1,000 samples per shard
IMAGE_FORMATS = ("jpg", "png")


def plan_splits(pools: dict[str, list[Item]], *, seed: int, val_fraction: float,
                heldout_fraction: float) -> dict[str, list[Item]]:
    """{"train", "val"(, "heldout")} -> items in shard order; empty splits are dropped."""
    if "all" in pools:
        val, train = stratified_split(pools["all"], val_fraction, seed)
    else:
        train, val = pools["train"], pools.get("val")
        if val is None:
            val, train = stratified_split(train, val_fraction, seed)
    splits = {"train": train, "val": val}
    if heldout_fraction > 0:  # for lr selection: never the split the results are reported on
        splits["heldout"], splits["train"] = stratified_split(train, heldout_fraction, seed + 1)
    ordered = {}
    for i, (name, items) in enumerate(splits.items()):
        order = np.random.default_rng([seed, i]).permutation(len(items))
        if len(items):
            ordered[name] = [items[j] for j in order]
    return ordered


def shard_sizes(n: int, maxcount: int | None = None, num_shards: int | None = None) -> list[int]:
    """Samples per shard: `num_shards` near-equal shards (never more than n), else chunks of maxcount."""
    if num_shards:
        k = min(num_shards, n)
        return [n // k + (i < n % k) for i in range(k)]
    maxcount = maxcount or DEFAULT_MAXCOUNT
    return [maxcount] * (n // maxcount) + ([n % maxcount] if n % maxcount else [])


def encode_image(obj, image_format: str, quality: int, max_size: int | None) -> bytes:
    """A PIL image or an image file path -> JPEG / PNG bytes (JPEG files copied when possible)."""
    from PIL import Image

    if isinstance(obj, str):
        if image_format == "jpg" and max_size is None:
            with Image.open(obj) as probe:
                is_jpeg = probe.format == "JPEG"  # e.g. ImageNet's one PNG named .JPEG is re-encoded
            if is_jpeg:
                with open(obj, "rb") as f:
                    return f.read()
        with Image.open(obj) as opened:
            opened.load()
            image = opened.copy()
    else:
        image = obj
    if image.mode not in ("L", "RGB"):
        image = image.convert("L" if image.mode in ("1", "LA", "I;16") else "RGB")
    if max_size and min(image.size) > max_size:  # shorter side -> max_size
        scale = max_size / min(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.BICUBIC, reducing_gap=3.0)
    buffer = io.BytesIO()
    if image_format == "jpg":
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def _write_shard(job: dict) -> dict:
    """Write one planned shard (runs in a worker process); returns its manifest entry."""
    folder, prefix, split, index = job["folder"], job["prefix"], job["split"], job["index"]
    final = os.path.join(folder, shard_file_name(prefix, split, index))
    tmp = f"{final}.tmp{os.getpid()}"
    source: Source = job["source"]
    writer = wds.ShardWriter(os.path.join(folder, f"{prefix}-{split}-%06d.tar"), maxcount=len(job["items"]) + 1,
                             start_shard=index, verbose=0, opener=lambda _: tmp,
                             post=lambda name: os.replace(tmp, name),  # complete shards only
                             mtime=0)  # reproducible bytes
    try:
        for ref, label, key in job["items"]:
            try:
                data = encode_image(source.load(ref), job["format"], job["quality"], job["max_size"])
            except Exception as exn:
                raise DatasetError(f"cannot encode sample {key!r} ({ref}) for {os.path.basename(final)}: {exn}",
                                   shard=final, key=key) from exn
            writer.write({"__key__": key, job["format"]: data, "cls": int(label)})
    except BaseException:
        writer.post = None
        writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    writer.close()
    return {"split": split, "index": index, "url": os.path.basename(final), "samples": len(job["items"]),
            "bytes": os.path.getsize(final)}


def _fingerprint(build: dict) -> str:
    return json.dumps({k: v for k, v in build.items() if k != "command"}, sort_keys=True)


def write_shards(source: Source, out: str, *, seed: int = 0, val_fraction: float = 0.2,
                 heldout_fraction: float = 0.0, maxcount: int | None = None, num_shards: int | None = None,
                 image_format: str | None = None, quality: int = 95, max_size: int | None = None,
                 workers: int = 1, prefix: str | None = None, overwrite: bool = False, progress: bool = True,
                 command: str | None = None) -> dict:
    """Write `source` as shards + manifest.json into `out` (resumable); returns the manifest.

    Args:
        source: from `sources.make_source`.
        out: the dataset folder (created).
        seed: split and order seed.
        val_fraction: stratified val fraction, only for sources without an official val split.
        heldout_fraction: stratified fraction of train set aside as "heldout" (0: none).
        maxcount / num_shards: samples per shard (default 1000), or a number of shards per split.
        image_format: "jpg" or "png" (default: the source's; png is lossless).
        quality: JPEG quality.
        max_size: downscale images whose shorter side is longer (None: keep sizes).
        workers: parallel writer processes.
        prefix: shard name prefix (default: the source's name).
        overwrite: discard a folder written with other options instead of refusing.
        command: the command line, recorded so error messages can say how to resume.
    """
    image_format = (image_format or source.default_format).lower().replace("jpeg", "jpg")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format {image_format!r}; choose from {IMAGE_FORMATS}")
    if maxcount and num_shards:
        raise ValueError("give maxcount or num_shards, not both")
    out = os.path.abspath(os.path.expanduser(out))
    prefix = prefix or source.name
    splits = plan_splits(source.pools(), seed=seed, val_fraction=val_fraction, heldout_fraction=heldout_fraction)
    build = {"source": source.config(), "seed": seed, "val_fraction": val_fraction,
             "heldout_fraction": heldout_fraction, "maxcount": None if num_shards else (maxcount or DEFAULT_MAXCOUNT),
             "num_shards": num_shards, "format": image_format,
             "quality": quality if image_format == "jpg" else None, "max_size": max_size, "prefix": prefix,
             "samples": {split: len(items) for split, items in splits.items()},
             "command": command or "python bench.py shards ..."}
    jobs = []
    for split, items in splits.items():
        start = 0
        for index, size in enumerate(shard_sizes(len(items), maxcount, num_shards)):
            jobs.append({"source": source, "items": items[start:start + size], "folder": out, "prefix": prefix,
                         "split": split, "index": index, "format": image_format, "quality": quality,
                         "max_size": max_size})
            start += size
    manifest = {
        "format": FORMAT, "name": prefix, "source": source.description,
        "num_classes": len(source.class_names), "class_names": list(source.class_names),
        "image_format": image_format, "base_url": None, "complete": False,
        "splits": {split: {"num_samples": len(items), "planned_shards": sum(j["split"] == split for j in jobs),
                           "shards": []} for split, items in splits.items()},
        "defaults": source.defaults, "build": build,
    }
    os.makedirs(out, exist_ok=True)
    done = _resumable_entries(out, build, overwrite)
    for entry in done.values():
        manifest["splits"][entry["split"]]["shards"].append(entry)
    for stale in glob.glob(os.path.join(glob.escape(out), f"{glob.escape(prefix)}-*.tar.tmp*")):
        os.remove(stale)  # from an interrupted run (one writer per folder)
    write_manifest(out, _public(manifest))

    pending = [j for j in jobs if (j["split"], j["index"]) not in done]
    bar = progress_bar(sum(len(j["items"]) for j in jobs), sum(e["samples"] for e in done.values()), prefix, progress)
    last_write = time.monotonic()

    def record(entry: dict) -> None:
        nonlocal last_write
        manifest["splits"][entry["split"]]["shards"].append(entry)
        bar.update(entry["samples"])
        if time.monotonic() - last_write > 2.0:  # a crash loses at most ~2 s of records
            write_manifest(out, _public(manifest))
            last_write = time.monotonic()

    try:
        if workers <= 1 or len(pending) <= 1:
            for job in pending:
                record(_write_shard(job))
        else:
            with cf.ProcessPoolExecutor(max_workers=workers) as pool:
                queue, running = iter(pending), set()
                while True:  # at most 2 jobs per worker in flight: item lists stay small
                    for job in queue:
                        running.add(pool.submit(_write_shard, job))
                        if len(running) >= 2 * workers:
                            break
                    if not running:
                        break
                    finished, running = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for future in finished:
                        record(future.result())
    finally:
        bar.close()
        write_manifest(out, _public(manifest))
    manifest["complete"] = True
    write_manifest(out, _public(manifest))
    return _public(manifest)


def _public(manifest: dict) -> dict:
    """The manifest as written: shard entries sorted, without the writer's bookkeeping."""
    result = dict(manifest)
    result["splits"] = {
        split: {"num_samples": entry["num_samples"], "planned_shards": entry["planned_shards"],
                "shards": [{"url": s["url"], "samples": s["samples"], "bytes": s["bytes"]}
                           for s in sorted(entry["shards"], key=lambda s: s["url"])]}
        for split, entry in manifest["splits"].items()}
    if not result["complete"]:
        return result
    for split, entry in result["splits"].items():
        if len(entry["shards"]) != entry["planned_shards"] or \
                sum(s["samples"] for s in entry["shards"]) != entry["num_samples"]:
            raise DatasetError(f"internal error: split {split!r} incomplete at finish")
    return result


def _resumable_entries(out: str, build: dict, overwrite: bool) -> dict[tuple[str, int], dict]:
    """Shards of an earlier run with the same options that are complete on disk."""
    path = os.path.join(out, MANIFEST)
    if not os.path.isfile(path):
        if scan_named_shards(out) and not overwrite:
            raise DatasetError(f"{out} already holds shards but no {MANIFEST}; choose another --out or pass --overwrite")
        return {}
    old = read_manifest(path)
    if overwrite or old.get("build") is None or _fingerprint(old["build"]) != _fingerprint(build):
        if not overwrite:
            raise DatasetError(f"{out} holds a dataset written with other options:\n  old: "
                               f"{_fingerprint(old.get('build') or {})}\n  new: {_fingerprint(build)}\n"
                               "pass --overwrite to replace it, or choose another --out")
        for split, entry in old.get("splits", {}).items():
            for shard in entry.get("shards", []):
                if os.path.isfile(os.path.join(out, shard["url"])):
                    os.remove(os.path.join(out, shard["url"]))
        os.remove(path)
        return {}
    done = {}
    for split, entry in old["splits"].items():
        for shard in entry["shards"]:
            file = os.path.join(out, shard["url"])
            index = int(shard["url"].rsplit("-", 1)[1].split(".")[0])
            if os.path.isfile(file) and os.path.getsize(file) == shard.get("bytes"):
                done[(split, index)] = {**shard, "split": split, "index": index}
    return done
