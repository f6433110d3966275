"""Reading a dataset's shards back: `bench.py shards verify` (every sample decodes, labels in
range, keys unique, counts as the manifest says) and `bench.py shards index` (count every
shard once and write a manifest beside shards that have none; the shards are only read)."""
from __future__ import annotations

import concurrent.futures as cf
import os
from collections import Counter

from amod_bench.data.errors import DatasetError
from amod_bench.data.layouts import folder_manifest, guessed_split_manifest, is_spec_file, spec_manifest
from amod_bench.data.manifest import FORMAT, MANIFEST, Dataset, check_manifest, is_remote, write_manifest
from amod_bench.data.opening import open_dataset
from amod_bench.data.reading import decode_sample, progress_bar, read_shards


def _check_shard(job: dict) -> dict:
    """Read one shard fully: count, keys, label histogram, problems (runs in a worker process)."""
    url, expected, exact, num_classes = job["url"], job["expected"], job["exact"], job["num_classes"]
    problems, keys, labels = [], [], Counter()
    try:
        for sample in read_shards([dict(url=url)], counts={url: expected}, exact=exact):
            keys.append(sample["__key__"])
            try:
                labels[decode_sample(sample, num_classes)[1]] += 1
            except DatasetError as exn:
                problems.append(str(exn))
    except DatasetError as exn:
        problems.append(str(exn))
    return {"url": url, "samples": len(keys), "keys": keys, "labels": labels, "problems": problems}


class _Serial:
    """`pool.map` in the calling process (workers=1)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(fn, jobs):
        return map(fn, jobs)


def check_shards(ds: Dataset, *, workers: int = 1, progress: bool = True, check_labels: bool = True) -> dict:
    """Read every sample of every split of a dataset; {split: {"shards": [results], "problems": [...]}}."""
    label_limit = ds.num_classes if check_labels else None
    jobs = [{"split": split, "url": url, "expected": n, "exact": ds.exact_counts, "num_classes": label_limit}
            for split in ds.splits for url, n in ds.shards(split)]
    results: dict[str, dict] = {split: {"shards": [], "problems": []} for split in ds.splits}
    bar = progress_bar(len(jobs), 0, f"reading {ds.name}", progress, unit="shard")
    with cf.ProcessPoolExecutor(max_workers=workers) if workers > 1 else _Serial() as pool:
        for job, result in zip(jobs, pool.map(_check_shard, jobs)):
            results[job["split"]]["shards"].append(result)
            bar.update(1)
    bar.close()
    for split, entry in results.items():
        keys = Counter(k for r in entry["shards"] for k in r["keys"])
        duplicates = [k for k, c in keys.items() if c > 1]
        entry["problems"] = [p for r in entry["shards"] for p in r["problems"]]
        if duplicates:
            entry["problems"].append(f"split {split!r}: {len(duplicates)} duplicate keys, e.g. {duplicates[:3]}")
        entry["samples"] = sum(r["samples"] for r in entry["shards"])
        entry["expected"] = ds.num_samples(split)
        if ds.exact_counts and entry["samples"] != entry["expected"]:
            entry["problems"].append(f"split {split!r}: {entry['samples']} samples read, manifest says "
                                     f"{entry['expected']}")
        entry["labels"] = sum((r["labels"] for r in entry["shards"]), Counter())
    return results


def verify_shards(spec: str, *, workers: int = 1, progress: bool = True, out=print) -> list[str]:
    """Read every sample back, check decoding, labels, unique keys and counts; returns problems."""
    ds = open_dataset(spec)
    results = check_shards(ds, workers=workers, progress=progress)
    problems = []
    for split, entry in results.items():
        status = "ok" if not entry["problems"] else f"{len(entry['problems'])} problem(s)"
        out(f"{ds.name} {split}: {len(entry['shards'])} shards, {entry['samples']} samples "
            f"(manifest {entry['expected']}{'' if ds.exact_counts else ', estimated'}), "
            f"{len(entry['labels'])}/{ds.num_classes} classes present: {status}")
        problems += entry["problems"]
    for problem in problems[:50]:
        out(f"  {problem}")
    return problems


def _to_index(location: str, num_classes: int | None) -> tuple[Dataset, str, str]:
    """(dataset with counts to find, manifest path to write, folder shard URLs are relative to)."""
    if is_spec_file(location):
        stem = os.path.splitext(os.path.basename(location))[0]
        manifest, base = spec_manifest(location, counts_required=False)
        ds = Dataset(manifest, root=location, base=base)
        return ds, os.path.join(os.path.dirname(location), f"{stem}.manifest.json"), ""
    if os.path.isfile(os.path.join(location, MANIFEST)):
        raise DatasetError(f"{location} already has a {MANIFEST}")
    if not os.path.isdir(location):
        raise DatasetError(f"{location} is not a folder or a dataset spec file (*.yaml)")
    # the class count is found from the labels: any placeholder opens the layout
    manifest = folder_manifest(location, num_classes=num_classes or 1) or guessed_split_manifest(location,
                                                                                               num_classes)
    return Dataset(manifest, root=location, base=location), os.path.join(location, MANIFEST), location


def index_shards(location: str, *, num_classes: int | None = None, workers: int = 1,
                 progress: bool = True) -> tuple[dict, str]:
    """Count every shard of a folder without a manifest (a recognised layout, or .tar files whose
    names say their split) or of a dataset spec file once, and write an exact manifest: the
    folder's `manifest.json`, or `NAME.manifest.json` beside `NAME.yaml`. Returns (it, its path)."""
    location = os.path.abspath(os.path.expanduser(location))
    ds, out, relative_to = _to_index(location, num_classes)
    results = check_shards(ds, workers=workers, progress=progress, check_labels=False)
    problems = [p for entry in results.values() for p in entry["problems"]]
    if problems:
        raise DatasetError(f"{location}: cannot index, {len(problems)} problem(s); first: {problems[0]}")
    found = max((label for entry in results.values() for label in entry["labels"]), default=-1) + 1
    num_classes = num_classes or (ds.num_classes if is_spec_file(location) else found)
    if found > num_classes:
        raise DatasetError(f"{location}: labels go up to {found - 1}, beyond num_classes {num_classes}")

    def entry(result: dict) -> dict:
        url = result["url"]
        shard = {"url": os.path.relpath(url, relative_to) if relative_to else url, "samples": result["samples"]}
        return {**shard, "bytes": os.path.getsize(url)} if not is_remote(url) else shard

    manifest = {
        "format": FORMAT, "name": ds.name, "source": f"index of existing shards ({ds.manifest['source']})",
        "num_classes": num_classes, "class_names": [str(i) for i in range(num_classes)],
        "image_format": None, "base_url": None, "complete": True,
        "splits": {split: {"num_samples": e["samples"], "planned_shards": len(e["shards"]),
                           "shards": [entry(r) for r in e["shards"]]} for split, e in results.items()},
        "defaults": ds.manifest.get("defaults") or {},
        "build": {"command": f"python bench.py shards index {location}"},
    }
    check_manifest(manifest, out)
    write_manifest(os.path.dirname(out), manifest, os.path.basename(out))
    return manifest, out
