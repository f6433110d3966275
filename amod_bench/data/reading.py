"""Reading shards: webdataset's tar iterator per shard, with errors that name shard and key.

Used by the loaders (inside every DataLoader worker) and by `bench.py shards verify`.
Each shard is opened on its own with `webdataset.tarfile_samples`, so a failure can be
attributed to it, its sample count checked against the manifest (a shard truncated at a
member boundary reads "cleanly" but short), and, under the skip policy, the samples it
lost counted instead of silently dropped.
"""
from __future__ import annotations

import io
import logging
from typing import Callable, Iterable, Iterator

import webdataset as wds

from amod_bench.data.errors import DatasetError

log = logging.getLogger("amod_bench.data")

IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "ppm", "pgm", "bmp")
ON_ERROR = ("raise", "skip")


class SkipCounter:
    """Bad samples skipped in one loader worker; the batcher takes the count into each batch.

    Args:
        limit: raise once this many samples in a row were bad with none good in between
            (a stream where every sample is bad would otherwise never yield a batch).
    """

    def __init__(self, limit: int):
        self.pending = 0  # skipped since the last batch
        self.total = 0
        self.run = 0      # skipped since the last good sample
        self.limit = max(1, limit)

    def skip(self, n: int, error: DatasetError) -> None:
        if n <= 0:
            return
        self.pending += n
        self.total += n
        self.run += n
        if self.total <= 10 or self.total % 1000 == 0:
            log.warning("skipping %d bad sample(s) (on_error='skip', %d so far): %s", n, self.total, error)
        if self.run >= self.limit:
            raise DatasetError(f"{self.run} bad samples in a row and none readable (on_error='skip'); "
                               f"last error: {error}", shard=error.shard, key=error.key)

    def good(self) -> None:
        self.run = 0

    def take(self) -> int:
        n, self.pending = self.pending, 0
        return n


def _describe(exn: Exception) -> str:
    """webdataset appends the stream and URL to exception args; keep the first, readable part."""
    if isinstance(exn, OSError) and exn.strerror:
        return f"{type(exn).__name__}: {exn.strerror}"
    return f"{type(exn).__name__}: {exn.args[0] if exn.args else exn}"


def _raise_or_skip(error: DatasetError, on_error: str, counter: SkipCounter | None, n: int) -> None:
    if on_error == "raise" or counter is None:
        raise error
    counter.skip(n, error)


_DECODED = "__decoded__"  # a cached sample's (image, label), kept in the sample's own dict


class ShardCache:
    """Raw samples of whole shards, kept in memory up to `max_bytes` of image and label bytes
    (and of decoded pixels, see `decode`), so a loop that streams the same small shards every
    epoch parses each tar once: webdataset's tar reader is pure Python, a large share of a
    small dataset's data time (see docs/DECISIONS.md). Only shards read completely and cleanly are kept; a shard that
    does not fit is read from its file every time."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.size = max_bytes, 0
        self.shards: dict[str, list[dict]] = {}

    def get(self, url: str) -> list[dict] | None:
        return self.shards.get(url)

    def offer(self, url: str, samples: list[dict]) -> None:
        size = sum(len(v) for sample in samples for v in sample.values() if isinstance(v, bytes))
        if self.size + size <= self.max_bytes:
            self.shards[url] = samples
            self.size += size

    def decode(self, sample: dict, num_classes: int | None):
        """decode_sample, remembered beside the bytes of a cached shard's sample while the budget
        allows: decoding each small image again every epoch cost a third of the quickstart's
        data time. (Transforms return new images, so a remembered one is never altered.)"""
        decoded = sample.get(_DECODED)
        if decoded is None:
            decoded = decode_sample(sample, num_classes)
            image = decoded[0]
            size = image.width * image.height * len(image.getbands())
            if sample.get("__url__") in self.shards and self.size + size <= self.max_bytes:
                sample[_DECODED] = decoded
                self.size += size
        return decoded


def read_shards(shards: Iterable[dict], *, counts: dict[str, int], exact: bool, on_error: str = "raise",
                counter: SkipCounter | None = None, owner: Callable[[int], bool] | None = None,
                offsets: dict[str, int] | None = None, max_failed_shards: int = 0,
                cache: ShardCache | None = None) -> Iterator[dict]:
    """Raw samples `{"__key__", "__url__", "cls", "png"|"jpg", ...}` from a stream of `{"url"}` dicts.

    Args:
        shards: webdataset shard-list items (`dict(url=...)`).
        counts: manifest sample count per URL.
        exact: the counts are exact, so a shard with a different count is an error.
        on_error: "raise" (DatasetError) or "skip" (count the lost samples into `counter`).
        owner: keep only samples whose index in the concatenated split satisfies it
            (eval's modulo split when there are fewer shards than readers); None keeps all.
        offsets: index of each shard's first sample in the concatenated split (from exact
            counts); without it the running count of samples read is used.
        max_failed_shards: raise after this many shards in a row failed (0: never), so an
            endless resampled stream of broken shards cannot spin forever.
        cache: serve shards from it, and offer it every shard read completely and cleanly.
    """
    position = 0
    failed_in_a_row = 0

    def owned(first: int, stop: int) -> int:
        return sum(1 for i in range(first, stop) if owner(i)) if owner else stop - first

    for shard in shards:
        url = shard["url"]
        expected = counts.get(url)
        start = offsets[url] if offsets is not None and url in offsets else position
        n, last_key = 0, None
        error = None
        cached = cache.get(url) if cache is not None else None
        kept = [] if cache is not None and cached is None else None
        try:
            for sample in (cached if cached is not None else
                           wds.tarfile_samples([dict(url=url)], handler=wds.reraise_exception)):
                index, n, last_key = start + n, n + 1, sample["__key__"]
                if kept is not None:
                    kept.append(sample)
                if owner is None or owner(index):
                    yield sample
        except Exception as exn:  # unreadable tar, missing file, HTTP error, truncated member
            where = f"after sample {last_key!r}" if last_key else "before its first sample"
            error = DatasetError(f"shard {url}: cannot read it {where} ({n} samples read"
                                 f"{f' of {expected}' if expected is not None else ''}): {_describe(exn)}",
                                 shard=url, key=last_key)
        if error is None and exact and expected is not None and n != expected:
            error = DatasetError(f"shard {url}: {n} samples, but the manifest says {expected} "
                                 f"(truncated or replaced shard?); last key {last_key!r}", shard=url, key=last_key)
        if error is not None:
            if expected is not None:
                lost = owned(start + n, start + max(expected, n))
            else:  # unknown shard size: count the failure itself, once across readers
                lost = int(owner is None or owner(start + n))
            _raise_or_skip(error, on_error, counter, lost)
            failed_in_a_row += n == 0
            if max_failed_shards and failed_in_a_row >= max_failed_shards:
                raise DatasetError(f"{failed_in_a_row} shards in a row could not be read; last: {error}",
                                   shard=url, key=last_key)
        else:
            failed_in_a_row = 0
            if kept is not None:
                cache.offer(url, kept)
        position = start + (expected if exact and expected is not None else n)


def progress_bar(total: int, initial: int, desc: str, enabled: bool, unit: str = "img"):
    """A tqdm bar for writing and checking shards (off with `enabled=False`)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


def decode_sample(sample: dict, num_classes: int | None):
    """(PIL RGB image, label) from a raw sample, or DatasetError naming shard and key.

    `num_classes=None` checks only that the label is a non-negative integer."""
    from PIL import Image

    key, url = sample.get("__key__"), sample.get("__url__")
    field = next((f for f in IMAGE_FIELDS if f in sample), None)
    if field is None:
        raise DatasetError(f"shard {url}: sample {key!r} has no image (fields: "
                           f"{sorted(k for k in sample if not k.startswith('__'))})", shard=url, key=key)
    try:
        image = Image.open(io.BytesIO(sample[field]))
        image.load()
        image = image.convert("RGB")  # grey (digits, MNIST), CMYK and palette images -> 3 channels
    except Exception as exn:
        raise DatasetError(f"shard {url}: sample {key!r}: cannot decode its {field} image: {exn}",
                           shard=url, key=key) from exn
    raw = sample.get("cls")
    try:
        label = int(raw.decode("ascii").strip() if isinstance(raw, (bytes, bytearray)) else raw)
    except (TypeError, ValueError, UnicodeDecodeError) as exn:
        raise DatasetError(f"shard {url}: sample {key!r}: label {raw!r} is not an integer", shard=url, key=key) from exn
    if label < 0 or (num_classes is not None and label >= num_classes):
        raise DatasetError(f"shard {url}: sample {key!r}: label {label} outside the class range "
                           f"[0, {num_classes})", shard=url, key=key)
    return image, label
