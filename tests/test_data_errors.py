"""Bad input: every kind of damage raises DatasetError naming shard and key, and under
on_error="skip" every lost sample is counted in the batches' `skipped` tensors."""
from __future__ import annotations

import os
import shutil
import tarfile

import pytest
import webdataset as wds

from amod_bench.data import DatasetError, eval_loader, open_dataset, train_loader
from amod_bench.data.sources import make_source
from amod_bench.data.writer import write_shards

KW = dict(img_size=8, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
VAL = 359  # digits val, in shards of 60: 60 x 5 + 59


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits60")
    write_shards(make_source("digits"), str(folder), maxcount=60, progress=False)
    return folder


@pytest.fixture
def ds_copy(pristine, tmp_path):
    """A fresh copy to damage; returns (folder, path of val shard i)."""
    folder = tmp_path / "ds"
    shutil.copytree(pristine, folder)
    return folder, lambda i, split="val": str(folder / f"digits-{split}-{i:06d}.tar")


def _rewrite(path: str, change) -> list[str]:
    """Rewrite a shard through webdataset, letting `change(index, sample)` edit samples; returns keys."""
    samples = list(wds.tarfile_samples([dict(url=path)]))
    with wds.TarWriter(path + ".new") as sink:
        for i, sample in enumerate(samples):
            sink.write(change(i, {k: v for k, v in sample.items() if k in ("__key__", "png", "cls")}))
    os.replace(path + ".new", path)
    return [s["__key__"] for s in samples]


def _eval(folder, on_error="raise", world_size=1, num_workers=0, split="val"):
    """(keys seen, total skipped, batches) over every rank."""
    ds = open_dataset(str(folder))
    keys, skipped, batches = [], 0, []
    for rank in range(world_size):
        for images, labels, skip, batch_keys in eval_loader(ds, split, batch_size=32, rank=rank,
                                                           world_size=world_size, num_workers=num_workers,
                                                           on_error=on_error, with_keys=True, **KW):
            keys += batch_keys
            skipped += int(skip)
            batches.append((images, labels, skip))
    return keys, skipped, batches


def test_undamaged_copy_reads_cleanly(ds_copy):
    keys, skipped, _ = _eval(ds_copy[0])
    assert len(keys) == len(set(keys)) == VAL and skipped == 0


def test_corrupt_tar(ds_copy):
    folder, shard = ds_copy
    with open(shard(2), "wb") as f:
        f.write(os.urandom(3000))
    with pytest.raises(DatasetError, match=r"digits-val-000002\.tar: cannot read it before its first sample"):
        _eval(folder)
    keys, skipped, _ = _eval(folder, on_error="skip")
    assert skipped == 60 and len(keys) == VAL - 60


def test_corrupt_shard_alone_on_a_rank_yields_an_empty_batch_with_the_count(ds_copy):
    folder, shard = ds_copy
    with open(shard(5), "wb") as f:
        f.write(b"not a tar file" * 100)
    keys, skipped, batches = _eval(folder, on_error="skip", world_size=6)  # one shard per rank
    assert skipped == 59 and len(keys) == VAL - 59
    empty = [b for b in batches if len(b[1]) == 0]
    assert len(empty) == 1 and int(empty[0][2]) == 59 and empty[0][0].shape == (0, 3, 8, 8)


@pytest.mark.parametrize("where", ["mid-member", "member-boundary"])
def test_truncated_shard(ds_copy, where):
    folder, shard = ds_copy
    members = tarfile.open(shard(1)).getmembers()  # KEY.cls, KEY.png, ... (2 members per sample)
    cut = members[20].offset + (700 if where == "mid-member" else 0)  # inside / before sample 10
    os.truncate(shard(1), cut)
    last_good = members[18].name.split(".")[0]  # the 10th sample is the last complete one
    message = "cannot read it after sample" if where == "mid-member" else "10 samples, but the manifest says 60"
    with pytest.raises(DatasetError, match=rf"digits-val-000001\.tar.*{message}|{message}.*{last_good}") as info:
        _eval(folder)
    assert "digits-val-000001.tar" in str(info.value) and last_good in str(info.value)
    keys, skipped, _ = _eval(folder, on_error="skip")
    assert skipped == 50 and len(keys) == VAL - 50 and len(set(keys)) == len(keys)


def test_undecodable_image(ds_copy):
    folder, shard = ds_copy
    keys = _rewrite(shard(3), lambda i, s: {**s, "png": b"\x89PNG garbage"} if i == 7 else s)
    with pytest.raises(DatasetError, match=rf"digits-val-000003\.tar: sample '{keys[7]}': cannot decode its png"):
        _eval(folder)
    seen, skipped, _ = _eval(folder, on_error="skip", world_size=2, num_workers=2)
    assert skipped == 1 and len(seen) == VAL - 1 and keys[7] not in seen


@pytest.mark.parametrize("label,why", [(b"10", "label 10 outside the class range"), (b"-1", "outside"),
                                       (b"seven", "is not an integer")])
def test_bad_label(ds_copy, label, why):
    folder, shard = ds_copy
    # the very last sample of the split: its skip must still reach the caller (final batch)
    keys = _rewrite(shard(5), lambda i, s: {**s, "cls": label} if i == 58 else s)
    with pytest.raises(DatasetError, match=rf"digits-val-000005\.tar: sample '{keys[58]}'.*{why}"):
        _eval(folder)
    seen, skipped, _ = _eval(folder, on_error="skip")
    assert skipped == 1 and len(seen) == VAL - 1


def test_missing_shard(ds_copy):
    folder, shard = ds_copy
    os.remove(shard(4))
    ds = open_dataset(str(folder))
    with pytest.raises(DatasetError, match=r"shard .*digits-val-000004\.tar is missing"):
        eval_loader(ds, "val", batch_size=32, rank=0, world_size=1, **KW)
    keys, skipped, _ = _eval(folder, on_error="skip", world_size=2)
    assert skipped == 60 and len(keys) == VAL - 60


def test_training_raises_through_loader_workers_and_counts_skips(ds_copy):
    folder, shard = ds_copy
    bad = {}
    for i in range(24):  # one bad image in every train shard
        bad[i] = _rewrite(shard(i, "train"), lambda j, s: {**s, "png": b"broken"} if j == 0 else s)[0]
    ds = open_dataset(str(folder))
    args = dict(batch_size=32, seed=0, epoch=0, rank=0, world_size=1, **KW)
    with pytest.raises(DatasetError, match=r"digits-train-0000\d\d\.tar: sample 'digits_\d+': cannot decode"):
        list(train_loader(ds, num_workers=2, **args))
    args["world_size"] = 2
    loader = train_loader(ds, on_error="skip", with_keys=True, shuffle_buffer=100, **args)
    batches = list(loader)
    assert len(batches) == len(loader) == ds.num_samples("train") // 64  # still exactly len(loader)
    skipped = sum(int(b[2]) for b in batches)
    assert skipped > 0 and not set(bad.values()) & {k for b in batches for k in b[3]}


@pytest.mark.timeout(60)
def test_training_on_nothing_but_broken_shards_stops(ds_copy):
    folder, shard = ds_copy
    for i in range(24):
        with open(shard(i, "train"), "wb") as f:
            f.write(b"x" * 1024)
    ds = open_dataset(str(folder))
    loader = train_loader(ds, batch_size=32, seed=0, epoch=0, rank=0, world_size=1, on_error="skip", **KW)
    with pytest.raises(DatasetError, match="in a row"):
        next(iter(loader))


def test_empty_split_and_bad_manifest(ds_copy):
    folder, _ = ds_copy
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["splits"]["val"]["shards"] = []
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="split 'val' is empty"):
        eval_loader(open_dataset(str(folder)), "val", batch_size=8, rank=0, world_size=1, **KW)
    manifest["num_classes"] = 11
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="not a valid amod-bench manifest: 10 class_names for num_classes 11"):
        open_dataset(str(folder))


def test_loader_errors_keep_their_type_from_worker_processes(ds_copy):
    folder, shard = ds_copy
    _rewrite(shard(0), lambda i, s: {**s, "cls": b"99"} if i == 3 else s)
    with pytest.raises(DatasetError, match="label 99 outside"):
        _eval(folder, num_workers=2)
