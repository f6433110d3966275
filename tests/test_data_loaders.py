"""Streaming loaders: exact-once evaluation, equal and deterministic training streams, HTTP and
pipe: shard URLs. Data: sklearn digits written to shards in a temp folder (no network)."""
from __future__ import annotations

import json
import multiprocessing
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import torch

from amod_bench.data import (DatasetError, EpochLoaders, ReplayedBatches, eval_loader, missing_dataset_message,
                             open_dataset, train_loader)
from amod_bench.data.reading import IMAGE_FIELDS
from amod_bench.data.sources import make_source
from amod_bench.data.writer import write_shards

KW = dict(img_size=16, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """digits in shards of 80: val = 359 samples in 5 uneven shards (80, 80, 80, 80, 39),
    train = 1,438 in 18 (the last holds 78)."""
    folder = tmp_path_factory.mktemp("digits80")
    write_shards(make_source("digits"), str(folder), maxcount=80, progress=False)
    ds = open_dataset(str(folder))
    assert [n for _, n in ds.shards("val")] == [80, 80, 80, 80, 39]
    return ds


def _eval_keys(ds, world_size, num_workers, split="val", batch_size=32):
    """Keys per rank through the real DataLoader path (worker processes included)."""
    per_rank = []
    for rank in range(world_size):
        loader = eval_loader(ds, split, batch_size=batch_size, rank=rank, world_size=world_size,
                             num_workers=num_workers, with_keys=True, **KW)
        batches = list(loader)
        assert len(batches) == len(loader)  # exact manifest counts, nothing skipped
        for images, labels, skipped, keys in batches:
            assert images.shape == (len(keys), 3, 16, 16) and labels.shape == (len(keys),)
            assert skipped.dtype == torch.long and skipped.dim() == 0 and int(skipped) == 0
        per_rank.append([k for b in batches for k in b[3]])
    return per_rank


@pytest.mark.parametrize("world_size,num_workers", [(2, 2), (3, 2), (3, 0), (1, 0)],
                         ids=["2x2-by-shard", "3x2-modulo", "3x0-by-shard", "1x0"])
def test_eval_sees_every_sample_exactly_once(digits, world_size, num_workers):
    # 5 uneven shards: 2 ranks x 2 workers split whole shards (odd count: one reader gets 2);
    # 3 x 2 = 6 readers > 5 shards falls back to sample-index modulo
    per_rank = _eval_keys(digits, world_size, num_workers)
    seen = Counter(k for keys in per_rank for k in keys)
    assert sum(seen.values()) == digits.num_samples("val") == 359
    assert not [k for k, c in seen.items() if c > 1], "a sample was evaluated twice"
    assert all(per_rank), "a rank got no data"
    # the same keys as a plain single reader
    assert set(seen) == set(_eval_keys(digits, 1, 0)[0])


def test_train_steps_equal_on_every_rank_and_each_sample_at_most_once(digits):
    # 18 train shards (17 x 80 + 78) dealt to 3 ranks: each gets 6, at least 78 + 5 x 80 = 478
    # samples, so 19 batches of 24; with 2 loader workers each reader gets 3 (>= 238): 2 x 9
    batch_size, world_size = 24, 3
    for num_workers, expected in ((0, 19), (2, 18)):
        keys = []
        for rank in range(world_size):
            loader = train_loader(digits, batch_size=batch_size, seed=0, epoch=0, rank=rank, world_size=world_size,
                                  num_workers=num_workers, shuffle_buffer=100, with_keys=True, **KW)
            assert len(loader) == expected
            batches = list(loader)
            assert len(batches) == expected
            assert all(b[0].shape == (batch_size, 3, 16, 16) and b[1].dtype == torch.long for b in batches)
            keys += [k for b in batches for k in b[3]]
        assert len(keys) == len(set(keys)) == expected * batch_size * world_size, "a sample twice in one epoch"


def _train_stream(ds, seed, epoch, rank=0, world_size=4, num_workers=0, shard_cache=None):
    loader = train_loader(ds, batch_size=16, seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                          num_workers=num_workers, with_keys=True, shuffle_buffer=200, shard_cache=shard_cache,
                          **KW)
    batches = list(loader)
    return [k for b in batches for k in b[3]], torch.cat([b[0] for b in batches]), \
        torch.cat([b[1] for b in batches])


def test_train_stream_is_deterministic_per_seed_epoch_rank(digits):
    rng_before = torch.get_rng_state()
    keys, images, labels = _train_stream(digits, seed=0, epoch=0)
    assert torch.equal(torch.get_rng_state(), rng_before), "the loader consumed the caller's global RNG"
    again = _train_stream(digits, seed=0, epoch=0)
    assert keys == again[0] and torch.equal(images, again[1]) and torch.equal(labels, again[2])
    for other in (_train_stream(digits, seed=1, epoch=0), _train_stream(digits, seed=0, epoch=1),
                  _train_stream(digits, seed=0, epoch=0, rank=1)):
        assert other[0] != keys
    # loader worker processes: deterministic as well (their own shard sequences)
    two = _train_stream(digits, seed=0, epoch=0, num_workers=2)
    assert two[0] == _train_stream(digits, seed=0, epoch=0, num_workers=2)[0]
    assert len(set(two[0])) > 0.5 * len(two[0])  # workers draw different shards, not copies
    # the loader object is re-iterable and yields the same epoch each time
    loader = train_loader(digits, batch_size=16, seed=0, epoch=0, rank=0, world_size=4, with_keys=True,
                          shuffle_buffer=200, **KW)
    assert [k for b in loader for k in b[3]] == [k for b in loader for k in b[3]] == keys


def test_train_labels_match_their_samples(digits):
    from amod_bench.data.sources import bundled_arrays

    _, source_labels = bundled_arrays("digits")
    keys, _, labels = _train_stream(digits, seed=3, epoch=2)
    assert [int(source_labels[int(k.split("_")[1])]) for k in keys] == labels.tolist()


def _shard_copy(ds, folder):
    import shutil

    shutil.copytree(ds.root, folder)
    return open_dataset(str(folder))


def test_epoch_loaders_start_the_next_epochs_workers_early_and_keep_each_epochs_stream(digits):
    def make(epoch: int, num_workers: int = 1):
        return train_loader(digits, batch_size=32, seed=0, epoch=epoch, rank=0, world_size=1,
                            num_workers=num_workers, with_keys=True, **KW)

    loaders = EpochLoaders(make, last_epoch=2)
    for epoch in range(3):
        batches = loaders(epoch)
        # the next epoch's worker is already running before this epoch's first batch is taken
        assert sorted(loaders.early) == ([epoch + 1] if epoch < 2 else [])
        assert len(multiprocessing.active_children()) >= (2 if epoch < 2 else 1)
        assert [k for b in batches for k in b[3]] == [k for b in make(epoch) for k in b[3]]
    inline = EpochLoaders(lambda epoch: make(epoch, num_workers=0), last_epoch=2)
    assert [k for b in inline(0) for k in b[3]] == [k for b in make(0, num_workers=0) for k in b[3]]
    assert not inline.early  # nothing to start early without worker processes


def test_replayed_eval_batches_read_the_shards_once_and_replay_them_exactly(digits, tmp_path):
    ds = _shard_copy(digits, tmp_path / "copy")
    loader = eval_loader(ds, "val", batch_size=64, rank=0, world_size=1, with_keys=True, **KW)
    replayed = ReplayedBatches(loader, max_bytes=2 ** 21)  # 359 x 3 x 16 x 16 float32 = 1.1 MB: fits
    first = list(replayed)
    for url, _ in ds.shards("val"):  # later passes must not need the shards
        Path(url).unlink()
    second = list(replayed)
    assert len(second) == len(first) == len(replayed) == 6
    for (x1, y1, s1, k1), (x2, y2, s2, k2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and int(s1) == int(s2) and k1 == k2


def test_replayed_batches_stream_again_when_over_the_cap_or_cut_short(digits, tmp_path):
    ds = _shard_copy(digits, tmp_path / "copy")
    too_big = ReplayedBatches(eval_loader(ds, "val", batch_size=64, rank=0, world_size=1, **KW),
                              max_bytes=10 ** 6)  # 1 MB: five of the six batches fit
    assert len(list(too_big)) == 6
    cut_short = ReplayedBatches(eval_loader(ds, "val", batch_size=64, rank=0, world_size=1, **KW),
                                max_bytes=2 ** 21)
    next(iter(cut_short))  # an interrupted pass is not replayed: it lacks batches
    Path(ds.shards("val")[0][0]).unlink()
    for loader in (too_big, cut_short):
        with pytest.raises(DatasetError, match="digits-val-000000.tar: cannot read it"):
            list(loader)


def test_shard_cache_keeps_whole_clean_shards_and_leaves_the_stream_unchanged(digits, tmp_path):
    from amod_bench.data import ShardCache

    ds = _shard_copy(digits, tmp_path / "copy")
    plain = [_train_stream(ds, seed=0, epoch=e) for e in (0, 1)]
    cache = ShardCache(max_bytes=10 ** 8)
    cached = [_train_stream(ds, seed=0, epoch=e, shard_cache=cache) for e in (0, 1)]
    for a, b in zip(plain, cached):
        assert a[0] == b[0] and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    counts = dict(ds.shards("train"))
    assert cache.shards and all(len(samples) == counts[url] for url, samples in cache.shards.items())
    for url in cache.shards:  # a cached shard is never read again: emptied, it would fail
        Path(url).write_bytes(b"")
    # a cached sample decoded once keeps its image: garbled bytes, it would fail to decode
    remembered = [s for samples in cache.shards.values() for s in samples if "__decoded__" in s]
    assert len(remembered) > 100  # those epoch 1 decoded after their shard was cached
    for sample in remembered:
        sample.update({field: b"garbled" for field in IMAGE_FIELDS if field in sample})
    again = _train_stream(ds, seed=0, epoch=1, shard_cache=cache)
    assert again[0] == plain[1][0] and torch.equal(again[1], plain[1][1])
    full = ShardCache(max_bytes=0)  # nothing fits: every shard is streamed from its file
    _train_stream(_shard_copy(digits, tmp_path / "copy2"), seed=0, epoch=0, shard_cache=full)
    assert full.shards == {} and full.size == 0
    with pytest.raises(ValueError, match="num_workers=0"):
        train_loader(ds, batch_size=16, seed=0, epoch=0, rank=0, world_size=1, num_workers=1,
                     shard_cache=cache, **KW)


def test_loader_argument_errors(digits):
    with pytest.raises(DatasetError, match="no split 'test'"):
        eval_loader(digits, "test", batch_size=8, rank=0, world_size=1, **KW)
    with pytest.raises(DatasetError, match="one may get only 718, fewer than one batch of 1000"):
        train_loader(digits, batch_size=1000, seed=0, epoch=0, rank=0, world_size=2, **KW)
    with pytest.raises(ValueError, match="unknown augment keys"):
        train_loader(digits, batch_size=8, seed=0, epoch=0, rank=0, world_size=1, augment={"flip": True}, **KW)
    with pytest.raises(ValueError, match="on_error"):
        eval_loader(digits, batch_size=8, rank=0, world_size=1, on_error="ignore", **KW)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(digits):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", digits.root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(url + "/manifest.json", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def _eval_all(ds, num_workers=0):
    loader = eval_loader(ds, "val", batch_size=50, rank=0, world_size=1, num_workers=num_workers,
                         with_keys=True, **KW)
    batches = list(loader)
    return [k for b in batches for k in b[3]], torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


@pytest.mark.timeout(120)
def test_streaming_over_http_matches_local_files(digits, http_server, tmp_path):
    remote = open_dataset(http_server + "/manifest.json")  # manifest fetched over HTTP too
    assert remote.shard_urls("val")[0].startswith("http://127.0.0.1:")
    local_keys, local_images, local_labels = _eval_all(digits)
    keys, images, labels = _eval_all(remote, num_workers=2)
    order = sorted(range(len(keys)), key=keys.__getitem__)  # 2 workers interleave batches
    local_order = sorted(range(len(local_keys)), key=local_keys.__getitem__)
    assert sorted(keys) == sorted(local_keys)
    assert torch.equal(images[order], local_images[local_order]) and torch.equal(labels[order], local_labels[local_order])
    # a hand-written manifest elsewhere: base_url on the server, brace patterns for the shards
    manifest = {k: v for k, v in digits.manifest.items() if k not in ("splits", "build")}
    manifest["base_url"] = http_server
    manifest["splits"] = {"val": {"shards": [{"url": "digits-val-{000000..000003}.tar", "samples": 80},
                                             {"url": "digits-val-000004.tar", "samples": 39}]}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert missing_dataset_message(str(tmp_path)) is None
    hand_written = open_dataset(str(tmp_path))
    assert hand_written.shard_urls("val") == remote.shard_urls("val") and hand_written.num_samples("val") == 359
    assert _eval_all(hand_written)[0] == local_keys
    # training: same seed, same stream, whether the bytes come from disk or HTTP
    via_base_url = open_dataset(digits.root, base_url=http_server)
    assert via_base_url.shard_urls("train")[0].startswith("http://")
    remote_train, local_train = _train_stream(via_base_url, 5, 1), _train_stream(digits, 5, 1)
    assert remote_train[0] == local_train[0] and torch.equal(remote_train[1], local_train[1])


@pytest.mark.timeout(60)
def test_missing_shard_over_http_names_it(digits, http_server):
    ds = open_dataset(digits.root, base_url=http_server + "/nothing-here")
    with pytest.raises(DatasetError, match=r"nothing-here/digits-val-000000\.tar"):
        list(eval_loader(ds, "val", batch_size=50, rank=0, world_size=1, **KW))


def test_pipe_urls(digits):
    ds = open_dataset(digits.root, base_url=f"pipe:cat {digits.root}/")
    assert ds.shard_urls("val")[0] == f"pipe:cat {digits.root}/digits-val-000000.tar"
    keys, images, _ = _eval_all(ds)
    local_keys, local_images, _ = _eval_all(digits)
    assert keys == local_keys and torch.equal(images, local_images)


def test_bundled_digits_defaults_do_not_flip(tmp_path):
    # the bundled manifest says hflip false: a digit's mirror image is another glyph
    ds = open_dataset("bundled:digits", cache_dir=str(tmp_path))
    assert ds.augment_defaults["hflip"] is False and ds.crop_pct == 1.0
    assert set(ds.splits) == {"train", "val", "heldout"}
    assert all(len(ds.shard_urls(s)) == 8 for s in ds.splits)
    loader = train_loader(ds, batch_size=32, seed=0, epoch=0, rank=0, world_size=1,
                          augment={"scale": [1.0, 1.0], "ratio": [1.0, 1.0]}, with_keys=True, **KW)
    images, labels, _, keys = next(iter(loader))
    # with a full-frame crop and no flip, the train image equals the eval (full-frame) image
    eval_images = {}
    for b in eval_loader(ds, "train", batch_size=256, rank=0, world_size=1, with_keys=True, **KW):
        eval_images.update(zip(b[3], b[0]))
    assert all(torch.allclose(img, eval_images[k], atol=1e-6) for img, k in zip(images, keys))


def test_every_augment_option_runs_and_stays_seeded(digits):
    augment = {"scale": [0.3, 1.0], "ratio": [0.5, 2.0], "hflip": True, "color_jitter": [0.3, 0.3, 0.3, 0.05],
               "trivial_augment": True, "random_erasing": 1.0, "interpolation": "bicubic"}

    def run(seed):
        loader = train_loader(digits, batch_size=16, seed=seed, epoch=0, rank=0, world_size=8, augment=augment,
                              shuffle_buffer=100, **KW)
        return torch.cat([b[0] for b in loader])

    first = run(0)
    assert first.shape == (len(first), 3, 16, 16) and torch.isfinite(first).all()
    assert torch.equal(first, run(0)) and not torch.equal(first, run(1))
