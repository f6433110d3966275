"""Streaming loaders built on every Ray Train worker: `train_loader` and `eval_loader`.

Both return a plain `torch.utils.data.DataLoader` (`batch_size=None`: batches are made inside
each loader worker by a webdataset `DataPipeline`), which Ray's `prepare_data_loader` leaves
alone. Each batch is `(images, labels, skipped)`:

    images   float32 [B, 3, img_size, img_size], normalised with the caller's mean/std
    labels   int64 [B]
    skipped  int64 [] - bad samples skipped (on_error="skip") since the previous batch of the
             same loader worker; summing it over an epoch counts every skipped sample once
    (keys)   list[str] of sample keys, only with `with_keys=True`

Training: each epoch is one pass without replacement. The split's shards are permuted with a
seed from (seed, epoch), the same permutation on every rank, then split by rank and by loader
worker as webdataset's split_by_node / split_by_worker do (rank r, worker w read shards
r + world_size * (w + num_workers * i)), so no shard is read twice in an epoch. Each reader
streams its shards through a seeded shuffle buffer and stops after the same number of batches,
`floor(L / batch_size)`, where L is the fewest samples any reader can be dealt (the sum of the
floor(shards / readers) smallest shard counts, from exact manifest counts). So every rank
yields the same `len(loader)` batches (DDP never waits on a rank that ran dry), each sample
at most once per epoch; samples beyond L in a reader's shards wait for a later epoch's deal.
A split with fewer shards than ranks x loader workers is refused. The stream is a pure
function of (seed, epoch, rank, world_size, num_workers): rebuild the loader with `epoch=e`
to resume at epoch e. Augmentation randomness comes from a per-worker torch generator state
seeded the same way, isolated from the caller's global RNG.

Evaluation: shards in manifest order (no shuffling), split by rank, then by loader worker, so
each sample is read exactly once across ranks x workers; with fewer shards than readers every
reader streams all shards and keeps samples whose index modulo the reader count is its own.
Ranks may get different numbers of batches: all-reduce correct/total once at the end.
"""
from __future__ import annotations

import functools
import hashlib
import os
import random
from itertools import islice
from typing import Callable, Iterator, Sequence

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from amod_bench.data.errors import DatasetError
from amod_bench.data.manifest import Dataset, is_remote
from amod_bench.data.reading import ON_ERROR, ShardCache, SkipCounter, _raise_or_skip, decode_sample, read_shards
from amod_bench.data.transforms import BatchNormalize, eval_transform, resolve_augment, train_transform


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (sha256: no collisions like seed*31 + epoch, no hash salt)."""
    return int.from_bytes(hashlib.sha256(repr(tuple(int(v) for v in values)).encode()).digest()[:8], "little") >> 1


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _split_by_rank(src, rank: int, world_size: int):
    """wds.split_by_node reads RANK/WORLD_SIZE from the environment; ours come as arguments."""
    yield from islice(src, rank, None, world_size)


class _IsolatedRNG:
    """Runs random transforms on a private torch CPU generator state (the caller's global
    RNG is untouched even with num_workers=0, and the augmentation stream is seeded)."""

    def __init__(self, seed: int):
        generator = torch.Generator()
        generator.manual_seed(seed)
        self.state = generator.get_state()

    def __call__(self, fn, x):
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.state)
            out = fn(x)
            self.state = torch.get_rng_state()
        return out


def _decoded(samples, *, num_classes: int, transform, rng: _IsolatedRNG | None, on_error: str,
             counter: SkipCounter, decode=decode_sample):
    for sample in samples:
        try:
            image, label = decode(sample, num_classes)
        except DatasetError as error:
            _raise_or_skip(error, on_error, counter, 1)
            continue
        counter.good()
        yield (rng(transform, image) if rng is not None else transform(image)), label, sample["__key__"]


def _collate(batch: list, skipped: int, with_keys: bool, img_size: int, normalize: BatchNormalize,
             rng: _IsolatedRNG | None):
    if batch:
        images = normalize(torch.stack([b[0] for b in batch]), rng)  # uint8 -> float (B, 3, H, W)
    else:  # only an eval reader whose every sample was bad: an empty batch carries the count
        images = torch.empty(0, 3, img_size, img_size)
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    out = (images, labels, torch.tensor(skipped, dtype=torch.long))
    return (*out, [b[2] for b in batch]) if with_keys else out


def _batches(samples, *, batch_size: int, counter: SkipCounter, with_keys: bool, img_size: int, hold: bool,
             normalize: BatchNormalize, rng: _IsolatedRNG | None = None):
    """Batches of `batch_size`; the last may be partial (eval only: training streams are endless).

    With `hold`, a full batch is emitted only once the stream goes on or ends, so skips after
    the last good sample still reach the caller inside the final batch.
    """
    collate = functools.partial(_collate, with_keys=with_keys, img_size=img_size, normalize=normalize, rng=rng)
    pending, batch = None, []
    for sample in samples:
        if pending is not None:
            yield collate(pending, counter.take())
            pending = None
        batch.append(sample)
        if len(batch) == batch_size:
            if hold:
                pending = batch
            else:
                yield collate(batch, counter.take())
            batch = []
    if pending is not None:
        yield collate(pending, counter.take())
    if batch or counter.pending:
        yield collate(batch, counter.take())


def _check_args(ds: Dataset, split: str, *, batch_size: int, img_size: int, mean, std, rank: int,
                world_size: int, num_workers: int, on_error: str) -> list[tuple[str, int]]:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}; choose from {ON_ERROR}")
    if batch_size < 1 or img_size < 1 or num_workers < 0:
        raise ValueError(f"batch_size ({batch_size}) and img_size ({img_size}) must be >= 1, num_workers >= 0")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {list(mean)} and {list(std)}")
    shards = ds.shards(split)
    if not shards or sum(n for _, n in shards) == 0:
        raise DatasetError(f"dataset {ds.root}: split {split!r} is empty (no shards or no samples)")
    if on_error == "raise":  # fail before any worker starts; remote shards fail when read
        for url, _ in shards:
            if not is_remote(url) and not os.path.isfile(url):
                raise DatasetError(f"dataset {ds.root}: split {split!r}: shard {url} is missing", shard=url)
    return shards


def _again_while_short(shards, repeat: bool):
    """The reader's shards once; under on_error="skip" again and again, so samples lost to bad
    ones are made up from its own shards and its rank still yields every batch (the epoch's
    batch budget, `with_epoch`, ends the stream)."""
    shards = list(shards)
    yield from shards
    while repeat and shards:
        yield from shards


class _TrainStream(IterableDataset):
    """One rank's training stream for one epoch; a fresh webdataset pipeline per iteration."""

    def __init__(self, ds: Dataset, shards, *, batches_per_worker: int, num_workers: int, batch_size: int,
                 img_size: int, transform, normalize: BatchNormalize, seed: int, epoch: int, rank: int,
                 world_size: int, on_error: str, shuffle_buffer: int, with_keys: bool,
                 shard_cache: ShardCache | None):
        super().__init__()
        self.shards = shards
        self.shard_cache = shard_cache
        self.num_samples = sum(n for _, n in self.shards)
        self.num_classes = ds.num_classes
        self.batches_per_worker, self.num_workers = batches_per_worker, max(1, num_workers)
        self.batch_size, self.img_size, self.transform = batch_size, img_size, transform
        self.normalize = normalize
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.on_error, self.shuffle_buffer, self.with_keys = on_error, shuffle_buffer, with_keys

    def __len__(self) -> int:
        return self.batches_per_worker * self.num_workers

    def __iter__(self) -> Iterator:
        worker, num_workers = _worker()
        if num_workers != self.num_workers:
            raise RuntimeError(f"train stream built for {self.num_workers} loader workers, run with {num_workers}")
        urls = [url for url, _ in self.shards]
        random.Random(_mix(self.seed, self.epoch)).shuffle(urls)  # the same deal on every rank
        stream_seed = _mix(self.seed, self.epoch, self.rank, self.world_size, worker, num_workers)
        counter = SkipCounter(limit=max(self.num_samples, 100))
        bufsize = max(1, min(self.shuffle_buffer, self.num_samples))
        rng = _IsolatedRNG(_mix(stream_seed, 2))  # augmentation randomness of this worker
        pipeline = wds.DataPipeline(
            wds.SimpleShardList(urls),
            functools.partial(_split_by_rank, rank=self.rank, world_size=self.world_size),
            wds.split_by_worker,
            functools.partial(_again_while_short, repeat=self.on_error == "skip"),
            functools.partial(read_shards, counts=dict(self.shards), exact=True, on_error=self.on_error,
                              counter=counter, max_failed_shards=2 * len(self.shards) + 10,
                              cache=self.shard_cache),
            wds.shuffle(bufsize, initial=bufsize, seed=_mix(stream_seed, 1)),
            functools.partial(_decoded, num_classes=self.num_classes, transform=self.transform, rng=rng,
                              on_error=self.on_error, counter=counter,
                              decode=self.shard_cache.decode if self.shard_cache is not None else decode_sample),
            functools.partial(_batches, batch_size=self.batch_size, counter=counter, with_keys=self.with_keys,
                              img_size=self.img_size, hold=False, normalize=self.normalize, rng=rng),
        ).with_epoch(nbatches=self.batches_per_worker)
        return iter(pipeline)


def train_batches_per_worker(ds: Dataset, split: str, *, batch_size: int, world_size: int,
                             num_workers: int) -> int:
    """Batches each loader worker of every rank yields per epoch (see the module docstring), or
    DatasetError saying which requirement the split misses, with the numbers."""
    shards = [n for _, n in ds.shards(split) if n > 0]
    workers = max(1, num_workers)
    readers = world_size * workers
    if not ds.exact_counts:
        raise DatasetError(f"dataset {ds.root}: the sample counts of split {split!r} are estimates; training "
                           "deals whole shards to ranks and needs each shard's exact count so that every rank "
                           f"takes the same number of steps: count them once with  python bench.py shards index "
                           f"{ds.root}  or give them in a dataset spec (docs/DATA.md)")
    if len(shards) < readers:
        raise DatasetError(f"dataset {ds.root}: split {split!r} has {len(shards)} shards, fewer than ranks x loader "
                           f"workers = {world_size} x {workers} = {readers}; training deals whole shards, so some "
                           f"would get none: use at most {len(shards)} readers (a suite's recipe.num_loader_workers "
                           "x resources.workers), or a split with more shards")
    fewest = sum(sorted(shards)[:len(shards) // readers])  # the fewest samples any reader can be dealt
    if fewest < batch_size:
        raise DatasetError(f"dataset {ds.root}: split {split!r} has {sum(shards)} samples in {len(shards)} shards; "
                           f"dealt to {world_size} x {workers} = {readers} readers, one may get only {fewest}, "
                           f"fewer than one batch of {batch_size}; lower the batch size or the number of readers")
    return fewest // batch_size


class _EvalStream(IterableDataset):
    """One rank's share of an evaluation split, each sample exactly once across all readers."""

    def __init__(self, ds: Dataset, shards, *, batch_size: int, img_size: int, transform,
                 normalize: BatchNormalize, rank: int, world_size: int, num_workers: int, on_error: str,
                 with_keys: bool):
        super().__init__()
        self.shards = shards
        self.num_classes, self.exact = ds.num_classes, ds.exact_counts
        self.batch_size, self.img_size, self.transform, self.normalize = batch_size, img_size, transform, normalize
        self.rank, self.world_size, self.num_workers = rank, world_size, max(1, num_workers)
        self.on_error, self.with_keys = on_error, with_keys
        self.readers = self.world_size * self.num_workers
        self.by_shard = len(shards) >= self.readers  # else: every reader reads all, keeps index % readers

    def _reader_counts(self) -> list[int]:
        """Samples each of this rank's loader workers will read (from the manifest counts)."""
        counts = [n for _, n in self.shards]
        if self.by_shard:
            mine = counts[self.rank::self.world_size]
            return [sum(mine[w::self.num_workers]) for w in range(self.num_workers)]
        total = sum(counts)
        ids = [self.rank * self.num_workers + w for w in range(self.num_workers)]
        return [total // self.readers + (i < total % self.readers) for i in ids]

    def __len__(self) -> int:
        """Batches this rank yields when no sample is skipped (exact with exact manifest counts)."""
        return sum(-(-n // self.batch_size) for n in self._reader_counts())

    def __iter__(self) -> Iterator:
        worker, num_workers = _worker()
        if num_workers != self.num_workers:
            raise RuntimeError(f"eval stream built for {self.num_workers} loader workers, run with {num_workers}")
        counter = SkipCounter(limit=10 ** 12)  # finite stream: no need to stop a run of bad samples
        read = functools.partial(read_shards, counts=dict(self.shards), exact=self.exact, on_error=self.on_error,
                                 counter=counter)
        if self.by_shard:
            stages = [functools.partial(_split_by_rank, rank=self.rank, world_size=self.world_size),
                      wds.split_by_worker, read]
        else:
            me, readers = self.rank * self.num_workers + worker, self.readers
            offsets, start = {}, 0
            for url, n in self.shards:
                offsets[url], start = start, start + n
            stages = [functools.partial(read, owner=lambda i: i % readers == me,
                                        offsets=offsets if self.exact else None)]
        pipeline = wds.DataPipeline(
            wds.SimpleShardList([url for url, _ in self.shards]),  # manifest order, never shuffled
            *stages,
            functools.partial(_decoded, num_classes=self.num_classes, transform=self.transform, rng=None,
                              on_error=self.on_error, counter=counter),
            functools.partial(_batches, batch_size=self.batch_size, counter=counter, with_keys=self.with_keys,
                              img_size=self.img_size, hold=True, normalize=self.normalize),
        )
        return iter(pipeline)


class EpochLoaders:
    """Training batches epoch by epoch, `make(epoch)` building each epoch's loader (a new
    DataLoader per epoch, so `persistent_workers` cannot help). With loader worker processes,
    each epoch's iterator starts one epoch early: its workers fork and fill their first batches
    while the previous epoch trains, instead of stalling the first step of every epoch (see
    docs/DECISIONS.md). None starts beyond `last_epoch`."""

    def __init__(self, make: Callable[[int], DataLoader], last_epoch: int):
        self.make, self.last_epoch = make, last_epoch
        self.early: dict[int, Iterator] = {}

    def __call__(self, epoch: int) -> Iterator:
        if epoch in self.early:
            batches, with_workers = self.early.pop(epoch), True
        else:
            loader = self.make(epoch)
            batches, with_workers = iter(loader), loader.num_workers > 0
        if with_workers and epoch < self.last_epoch:
            self.early[epoch + 1] = iter(self.make(epoch + 1))
        return batches


class ReplayedBatches:
    """An evaluation loader whose batches are kept in memory after the first full pass, when
    they fit in `max_bytes`, and replayed on every later pass (each pass is identical: eval
    streams are deterministic). Re-reading a small validation split at every evaluation cost
    as much as the evaluation itself (see docs/DECISIONS.md).
    A split larger than `max_bytes` is streamed from its shards every time."""

    def __init__(self, loader: DataLoader, max_bytes: int):
        self.loader, self.max_bytes = loader, max_bytes
        self.batches: list | None = None

    def __len__(self) -> int:
        return len(self.batches) if self.batches is not None else len(self.loader)

    def __iter__(self) -> Iterator:
        if self.batches is not None:
            yield from self.batches
            return
        kept, size = [], 0
        for batch in self.loader:
            if kept is not None:
                size += sum(t.numel() * t.element_size() for t in batch if isinstance(t, torch.Tensor))
                if size <= self.max_bytes:
                    kept.append(batch)
                else:
                    kept = None
            yield batch
        if kept is not None:  # only a complete pass is replayed
            self.batches = kept


def _data_loader(stream: IterableDataset, num_workers: int, seed: int, pin_memory: bool) -> DataLoader:
    # batch_size=None: the pipeline batches; the generator keeps DataLoader from drawing its
    # worker base seed from the caller's global RNG
    return DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed & 0x7FFF_FFFF))


def train_loader(ds: Dataset, split: str = "train", *, batch_size: int, img_size: int, mean: Sequence[float],
                 std: Sequence[float], seed: int, epoch: int, rank: int, world_size: int, num_workers: int = 0,
                 on_error: str = "raise", augment: dict | None = None, shuffle_buffer: int = 1000,
                 with_keys: bool = False, pin_memory: bool = False,
                 shard_cache: ShardCache | None = None) -> DataLoader:
    """The training batches of one rank for one epoch.

    Args:
        ds: from `open_dataset`.
        split: split name ("train"; "heldout" splits work too).
        batch_size: per rank.
        img_size: output side in pixels (RandomResizedCrop).
        mean, std: per-channel normalisation (RGB, on 0..1 pixel values).
        seed, epoch: the epoch's shard deal and the stream are a pure function of (seed, epoch, rank,
            world_size, num_workers).
        rank, world_size: this worker's place in the data-parallel group.
        num_workers: DataLoader worker processes (0: in the calling process).
        on_error: "raise" -> DatasetError naming shard and key; "skip" -> skip, count in `skipped`.
        augment: transform options (keys in amod_bench.data.transforms), over the manifest's defaults.
        shuffle_buffer: samples held by each worker's shuffle buffer (raw bytes).
        with_keys: also yield the list of sample keys as a 4th element.
        pin_memory: passed to the DataLoader.
        shard_cache: raw shards kept in memory across calls (epochs); it lives in this
            process, so only with num_workers=0. The stream is the same with or without it.

    `len(loader)` = max(1, num_workers) x floor(L / batch_size), identical on every rank, and
    exactly that many batches are yielded; L is the fewest samples the epoch's deal of whole
    shards can give one reader (module docstring). Each sample is seen at most once per epoch
    across all ranks. Raises DatasetError for estimated counts or fewer shards than readers.
    """
    shards = _check_args(ds, split, batch_size=batch_size, img_size=img_size, mean=mean, std=std, rank=rank,
                         world_size=world_size, num_workers=num_workers, on_error=on_error)
    if shard_cache is not None and num_workers:
        raise ValueError("shard_cache lives in the calling process: it needs num_workers=0")
    batches_per_worker = train_batches_per_worker(ds, split, batch_size=batch_size, world_size=world_size,
                                                  num_workers=num_workers)
    augment = resolve_augment(ds.augment_defaults, augment)
    stream = _TrainStream(ds, [(url, n) for url, n in shards if n > 0], batches_per_worker=batches_per_worker,
                          num_workers=num_workers, batch_size=batch_size, img_size=img_size,
                          transform=train_transform(img_size, augment),
                          normalize=BatchNormalize(mean, std, augment["random_erasing"]), seed=seed, epoch=epoch,
                          rank=rank, world_size=world_size, on_error=on_error, shuffle_buffer=shuffle_buffer,
                          with_keys=with_keys, shard_cache=shard_cache)
    return _data_loader(stream, num_workers, _mix(seed, epoch, rank), pin_memory)


def eval_loader(ds: Dataset, split: str = "val", *, batch_size: int, img_size: int, mean: Sequence[float],
                std: Sequence[float], rank: int, world_size: int, num_workers: int = 0, on_error: str = "raise",
                crop_pct: float | None = None, with_keys: bool = False, pin_memory: bool = False) -> DataLoader:
    """This rank's share of an evaluation split; every sample is seen once across ranks x workers.

    Args are as for `train_loader`; `crop_pct` (default: the manifest's, else 0.875) sets the
    resize before the centre crop. Batches may be uneven across ranks and the last one partial;
    `len(loader)` is this rank's batch count when nothing is skipped. A loader worker whose
    every sample is bad under on_error="skip" yields one empty batch that carries the count.
    """
    shards = _check_args(ds, split, batch_size=batch_size, img_size=img_size, mean=mean, std=std, rank=rank,
                         world_size=world_size, num_workers=num_workers, on_error=on_error)
    crop_pct = crop_pct if crop_pct is not None else ds.crop_pct
    interpolation = resolve_augment(ds.augment_defaults)["interpolation"]
    stream = _EvalStream(ds, shards, batch_size=batch_size, img_size=img_size,
                         transform=eval_transform(img_size, crop_pct, interpolation),
                         normalize=BatchNormalize(mean, std), rank=rank,
                         world_size=world_size, num_workers=num_workers, on_error=on_error, with_keys=with_keys)
    return _data_loader(stream, num_workers, rank, pin_memory)
