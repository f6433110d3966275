"""Shards written by others, read as they are: the timm / Hugging Face layout with `_info.json`,
webdataset's ImageNet naming, any shards through a dataset spec file, and a folder in no
known layout. Every fixture is written with stock webdataset (`wds.TarWriter`), never the
project's writer. Exact-once evaluation and at-most-once training are checked on sample keys
through the loaders with the rank / loader-worker split DDP uses; one suite runs end to end
on the timm layout through `bench.py` and a local Ray instance."""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from amod_bench.data import DatasetError, eval_loader, missing_dataset_message, open_dataset, train_loader
from amod_bench.data import cli as shards_cli

ROOT = Path(__file__).resolve().parents[1]
KW = dict(img_size=8, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
TRAIN_LENGTHS = [5, 7, 6, 5, 7, 6]            # 36 samples in 6 uneven shards
VAL_LENGTHS = [1 + i % 3 for i in range(64)]  # 127 samples in 64 shards: 3 ranks x 2 workers do not divide it


def _write_shard(path: Path, split: str, first: int, count: int, image_field: str, sidecar: bool = True) -> list[str]:
    """`count` samples (tiny RGB images, labels 0..9) in one tar by stock webdataset; returns keys."""
    keys = []
    with wds.TarWriter(str(path)) as sink:
        for i in range(first, first + count):
            key = f"{split}_{i:05d}"
            image = Image.new("RGB", (12, 10), (i * 7 % 256, 40, 90))
            if image_field == "webp":  # webdataset's writer encodes jpg/jpeg/png itself, webp as bytes
                buffer = io.BytesIO()
                image.save(buffer, "WEBP")
                image = buffer.getvalue()
            sample = {"__key__": key, image_field: image, "cls": i % 10}
            if sidecar:
                sample["json"] = {"filename": f"{key}.JPEG", "label": i % 10}
            sink.write(sample)
            keys.append(key)
    return keys


def _write_split(folder: Path, names: list[str], lengths: list[int], split: str, image_field: str) -> list[str]:
    keys, first = [], 0
    for name, n in zip(names, lengths):
        keys += _write_shard(folder / name, split, first, n, image_field)
        first += n
    return keys


@pytest.fixture(scope="module")
def timm_folder(tmp_path_factory):
    """timm/imagenet-1k-wds in miniature: imagenet1k-train-NNNN.tar (4 digits),
    imagenet1k-validation-NN.tar (2 digits), .jpg + .cls + .json members, and `_info.json`."""
    folder = tmp_path_factory.mktemp("imagenet1k-wds")
    train = [f"imagenet1k-train-{i:04d}.tar" for i in range(len(TRAIN_LENGTHS))]
    val = [f"imagenet1k-validation-{i:02d}.tar" for i in range(len(VAL_LENGTHS))]
    _write_split(folder, train, TRAIN_LENGTHS, "train", "jpg")
    _write_split(folder, val, VAL_LENGTHS, "validation", "jpg")
    info = {"name": "imagenet-1k", "splits": {
        "train": {"name": "train", "filenames": train, "shard_lengths": TRAIN_LENGTHS,
                  "num_samples": sum(TRAIN_LENGTHS)},
        "validation": {"name": "validation", "filenames": val, "shard_lengths": VAL_LENGTHS,
                       "num_samples": sum(VAL_LENGTHS)}}}
    (folder / "_info.json").write_text(json.dumps(info))
    return folder


def _run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    shards_cli.add_arguments(parser)
    return shards_cli.main(parser.parse_args([*argv, "--no-progress"]))


def _eval_keys(ds, world_size: int, num_workers: int, split: str = "val") -> list[list[str]]:
    per_rank = []
    for rank in range(world_size):
        loader = eval_loader(ds, split, batch_size=4, rank=rank, world_size=world_size, num_workers=num_workers,
                             with_keys=True, **KW)
        batches = list(loader)
        assert len(batches) == len(loader)
        per_rank.append([k for b in batches for k in b[3]])
    return per_rank


def _train_keys(ds, world_size: int, num_workers: int, epoch: int, batch_size: int = 2) -> list[list[str]]:
    per_rank = []
    for rank in range(world_size):
        loader = train_loader(ds, batch_size=batch_size, seed=0, epoch=epoch, rank=rank, world_size=world_size,
                              num_workers=num_workers, with_keys=True, shuffle_buffer=8, **KW)
        batches = list(loader)
        assert len(batches) == len(loader)
        per_rank.append([k for b in batches for k in b[3]])
    return per_rank


def test_timm_layout_opens_with_exact_counts_and_split_names_from_info(timm_folder):
    assert missing_dataset_message(str(timm_folder)) is None
    ds = open_dataset(str(timm_folder))
    assert ds.splits == ("train", "val")  # `validation` is the project's val
    assert ds.exact_counts and ds.num_samples("train") == 36 and ds.num_samples("val") == 127
    assert ds.num_classes == 1000  # imagenet1k: ImageNet-1k's classes, the .cls labels index them
    assert os.path.basename(ds.shard_urls("val")[-1]) == "imagenet1k-validation-63.tar"
    # a shard _info.json lists but the folder lacks is named before anything starts
    os.rename(timm_folder / "imagenet1k-train-0003.tar", timm_folder / "moved.tar.bak")
    try:
        assert "imagenet1k-train-0003.tar" in missing_dataset_message(str(timm_folder))
    finally:
        os.rename(timm_folder / "moved.tar.bak", timm_folder / "imagenet1k-train-0003.tar")


def test_eval_sees_each_of_64_validation_shards_samples_once_over_3_ranks_x_2_workers(timm_folder):
    ds = open_dataset(str(timm_folder))
    per_rank = _eval_keys(ds, world_size=3, num_workers=2)
    seen = Counter(k for keys in per_rank for k in keys)
    assert sum(seen.values()) == len(seen) == 127, "a validation sample was evaluated twice or never"
    assert seen.keys() == {f"validation_{i:05d}" for i in range(127)}
    assert all(per_rank)


def test_training_sees_each_sample_at_most_once_per_epoch_with_equal_steps(timm_folder):
    ds = open_dataset(str(timm_folder))
    # 6 shards dealt to 3 ranks x 2 workers: one shard each, the smallest holds 5 -> 2 batches of 2
    epochs = []
    for epoch in (0, 1):
        per_rank = _train_keys(ds, world_size=3, num_workers=2, epoch=epoch)
        assert [len(keys) for keys in per_rank] == [2 * 2 * 2] * 3  # 2 workers x 2 batches x 2 samples
        keys = [k for rank_keys in per_rank for k in rank_keys]
        assert len(keys) == len(set(keys)), f"epoch {epoch}: a sample was trained on twice"
        epochs.append(set(keys))
    assert epochs[0] != epochs[1]  # each epoch deals the shards anew
    # one rank, no loader workers: all 36 samples fit 18 batches of 2, each once
    (alone,) = _train_keys(ds, world_size=1, num_workers=0, epoch=0)
    assert sorted(alone) == sorted(f"train_{i:05d}" for i in range(36))
    with pytest.raises(DatasetError, match=r"6 shards, fewer than ranks x loader workers = 4 x 2 = 8"):
        train_loader(ds, batch_size=2, seed=0, epoch=0, rank=0, world_size=4, num_workers=2, **KW)


def test_webdataset_imagenet_naming_opens_with_estimates_and_index_makes_them_exact(tmp_path, capsys):
    folder = tmp_path / "imagenet"
    folder.mkdir()
    for split, lengths in (("train", [4, 4, 3]), ("val", [3, 2])):
        with wds.ShardWriter(str(folder / f"imagenet-{split}-%06d.tar"), maxcount=lengths[0], verbose=0) as sink:
            for i in range(sum(lengths)):
                sink.write({"__key__": f"{split}_{i:05d}", "png": Image.new("RGB", (9, 9), (i, 0, 0)), "cls": i % 4})
    assert sorted(os.listdir(folder))[:2] == ["imagenet-train-000000.tar", "imagenet-train-000001.tar"]
    ds = open_dataset(str(folder), samples_per_shard=4)
    assert not ds.exact_counts and ds.num_classes == 1000 and ds.num_samples("val") == 8  # estimates
    assert sorted(k for keys in _eval_keys(ds, world_size=2, num_workers=0) for k in keys) == \
        [f"val_{i:05d}" for i in range(5)]  # the real samples, each once
    with pytest.raises(DatasetError, match="estimates.*python bench.py shards index"):
        train_loader(ds, batch_size=2, seed=0, epoch=0, rank=0, world_size=1, **KW)
    assert _run_cli("index", str(folder), "--num-classes", "4") == 0
    assert f"dataset: {folder}" in capsys.readouterr().out
    exact = open_dataset(str(folder))
    assert exact.exact_counts and exact.num_samples("train") == 11 and exact.num_classes == 4
    assert sorted(os.listdir(folder))[-1] == "manifest.json"  # the shards are untouched, the manifest beside them
    assert len(_train_keys(exact, world_size=1, num_workers=0, epoch=0)[0]) == 10


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "myshards.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_dataset_spec_reads_brace_patterns_lists_and_pipe_urls(tmp_path):
    shards = tmp_path / "elsewhere"
    shards.mkdir()
    _write_split(shards, [f"part-a{i}.tar" for i in range(3)], [4, 4, 2], "train", "webp")
    _write_split(shards, ["held.tar", "out.tar"], [3, 3], "val", "jpeg")
    path = _spec(tmp_path, f"""\
        num_classes: 10
        splits:
          train:
            shards: "pipe:cat {shards}/part-a{{0..2}}.tar"   # a pipe: command per shard
            samples_per_shard: 4
            num_samples: 10                                  # the last shard holds the rest
          validation:
            shards: [elsewhere/held.tar, {shards}/out.tar]    # relative to this file, or absolute
            shard_lengths: [3, 3]
        """)
    assert missing_dataset_message(str(path)) is None
    ds = open_dataset(str(path))
    assert ds.name == "myshards" and ds.splits == ("train", "val") and ds.exact_counts
    assert [n for _, n in ds.shards("train")] == [4, 4, 2] and ds.shard_urls("train")[0].startswith("pipe:cat ")
    assert sorted(k for keys in _eval_keys(ds, world_size=2, num_workers=0) for k in keys) == \
        [f"val_{i:05d}" for i in range(6)]
    per_rank = _train_keys(ds, world_size=3, num_workers=0, epoch=0)
    keys = [k for rank_keys in per_rank for k in rank_keys]
    assert [len(k) for k in per_rank] == [2, 2, 2] and len(set(keys)) == 6  # each rank dealt 1 shard, >= 2 samples


@pytest.mark.parametrize("body,where,problem", [
    ("num_classes: 10\nsplits:\n  train:\n    shards: a-{0..2}.tar\n    shard_lengths: [3, 3]\n",
     ":5: splits.train.shard_lengths", "2 counts for 3 shards"),
    ("num_classes: 10\nsplits:\n  train:\n    shards: a.tar\n", ":3: splits.train", "no sample counts"),
    ("splits:\n  train: {shards: a.tar, num_samples: 3}\n", ":1: num_classes", "missing"),
    ("num_classes: 10\nsplits:\n  train: {shards: a.tar, samples: 3}\n", ":3: splits.train.samples",
     "unknown field"),
    ("num_classes: ten\nfolder: .\n", ":1: num_classes", "expected a positive integer"),
])
def test_dataset_spec_errors_name_file_line_and_field(tmp_path, body, where, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    message = missing_dataset_message(str(path))
    assert f"{path}{where}: " in message and problem in message
    with pytest.raises(DatasetError, match=problem):
        open_dataset(str(path))


def test_suite_validation_shows_the_spec_error_under_the_suite_line(tmp_path):
    from amod_bench.suite import SuiteError, load_suite

    (tmp_path / "bad.yaml").write_text("num_classes: 10\nsplits:\n  train: {shards: x.tar, num_samples: 0}\n")
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: s\noutput: out\ndefaults:\n  grid: {{model: vit_nano_patch7_28, "
                     f"dataset: {tmp_path}/bad.yaml}}\nstages:\n  - name: main\n    grid: {{router: dense}}\n")
    with pytest.raises(SuiteError) as error:
        load_suite(suite)
    assert f"{tmp_path / 'bad.yaml'}:3: splits.train.num_samples: expected a positive integer" in str(error.value)


def test_folder_in_no_known_layout_says_what_it_found_and_the_two_ways_forward(tmp_path):
    folder = tmp_path / "mydata"
    folder.mkdir()
    _write_shard(folder / "shard_train_a.tar", "train", 0, 3, "jpg")
    _write_shard(folder / "shard_val_a.tar", "val", 0, 2, "jpg")
    message = missing_dataset_message(str(folder))
    assert "shard_train_a.tar, shard_val_a.tar" in message and "train 1, val 1" in message
    assert "key 'train_00000', members ['cls', 'jpg', 'json']" in message
    assert "dataset spec" in message and f"python bench.py shards index {folder}" in message
    assert "--root" not in message, "never tell a user with shards to rebuild them from raw images"
    with pytest.raises(DatasetError, match="not one amod-bench recognises"):
        open_dataset(str(folder))
    # the names say their splits: `index` counts them once and the folder opens
    assert _run_cli("index", str(folder)) == 0
    ds = open_dataset(str(folder))
    assert ds.num_classes == 3 and ds.num_samples("train") == 3 and ds.num_samples("val") == 2  # labels 0..2
    # an empty folder still gets the command that writes shards
    (tmp_path / "empty").mkdir()
    assert "python bench.py shards imagefolder --root" in missing_dataset_message(str(tmp_path / "empty"))


def test_class_count_when_the_folder_does_not_know_it(tmp_path):
    folder = tmp_path / "birds"
    folder.mkdir()
    _write_split(folder, ["birds-train-0.tar", "birds-train-1.tar"], [3, 3], "train", "jpg")
    _write_split(folder, ["birds-validation-0.tar"], [2], "validation", "jpg")
    message = missing_dataset_message(str(folder))
    assert "no class count" in message and "num_classes: K" in message and "shards index" in message
    spec = _spec(tmp_path, f"folder: {folder}\nnum_classes: 10\n")
    ds = open_dataset(str(spec))
    assert ds.num_classes == 10 and ds.splits == ("train", "val") and not ds.exact_counts
    assert ds.root == str(spec)


def test_spec_without_counts_is_indexed_once_beside_the_spec(tmp_path, capsys):
    _write_split(tmp_path, ["s-train-0.tar", "s-train-1.tar"], [3, 4], "train", "jpg")
    spec = _spec(tmp_path, "num_classes: 10\nsplits:\n  train: {shards: 's-train-{0..1}.tar'}\n")
    assert "no sample counts" in missing_dataset_message(str(spec))
    assert _run_cli("index", str(spec)) == 0
    written = tmp_path / "myshards.manifest.json"
    assert f"dataset: {written}" in capsys.readouterr().out
    ds = open_dataset(str(written))
    assert ds.exact_counts and [n for _, n in ds.shards("train")] == [3, 4] and ds.num_classes == 10


def _timm_suite(tmp_path: Path, folder: Path) -> Path:
    path = tmp_path / "timm_suite.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: timm_layout
        output: {tmp_path / 'results'}
        defaults:
          grid: {{model: vit_nano_patch7_28, dataset: {folder}, seed: 0}}
          recipe: {{optimizer: adamw, lr: 0.001, epochs: 1, batch_size: 6, warmup_epochs: 0,
                    eval_every: 1, num_loader_workers: 0}}
          resources: {{workers: 1, cpus_per_worker: 1, max_failures: 0}}
        stages:
          - name: main
            grid: {{router: dense}}
        """))
    return path


def test_suite_on_the_timm_layout_plans_with_its_class_and_sample_counts(timm_folder, tmp_path):
    plan = subprocess.run([sys.executable, "bench.py", "plan", str(_timm_suite(tmp_path, timm_folder)), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr
    (row,) = [json.loads(line) for line in plan.stdout.splitlines()]
    assert (row["num_classes"], row["train_samples"], row["eval_samples"]) == (1000, 36, 127)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_suite_on_the_timm_layout_runs_through_bench_py_and_ray(timm_folder, tmp_path):
    from amod_bench.results import ResultsFolder

    run = subprocess.run([sys.executable, "bench.py", str(_timm_suite(tmp_path, timm_folder)), "--num-cpus", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (cell_folder,) = (tmp_path / "results" / "cells").iterdir()
    cell = ResultsFolder(tmp_path / "results").cell(cell_folder.name)
    assert cell.status() == "done"
    rows = cell.read_metrics()
    assert rows[-1]["step"] == 6  # 36 samples, batch 6, one rank
    assert rows[-1]["val_samples"] == 127  # every validation sample, once
    (report,) = [line.split(": ", 1)[1] for line in run.stdout.splitlines() if line.startswith("report: ")]
    assert Path(report).is_file()
