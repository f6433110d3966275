"""WebDataset shards: writing (`bench.py shards`), manifests, and streaming loaders.

    from amod_bench.data import open_dataset, train_loader, eval_loader, DatasetError, missing_dataset_message

    ds = open_dataset("bundled:digits")      # or a shard folder / manifest path or URL / dataset spec .yaml
    loader = train_loader(ds, "train", batch_size=64, img_size=32, mean=MEAN, std=STD,
                          seed=0, epoch=e, rank=rank, world_size=world_size)
    for images, labels, skipped in loader: ...

See docs/DATA.md for preparing ImageNet and the transfer sets and for the shard layouts read
as they are, `manifest.py` for the format, `layouts.py` for folders without a manifest and
dataset spec files, `loaders.py` for the streaming semantics. Names resolve lazily, so `missing_dataset_message`
(used by the suite validator) does not import torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "DatasetError": "amod_bench.data.errors",
    "Dataset": "amod_bench.data.manifest",
    "open_dataset": "amod_bench.data.opening",
    "missing_dataset_message": "amod_bench.data.opening",
    "train_loader": "amod_bench.data.loaders",
    "eval_loader": "amod_bench.data.loaders",
    "ReplayedBatches": "amod_bench.data.loaders",
    "EpochLoaders": "amod_bench.data.loaders",
    "ShardCache": "amod_bench.data.reading",
    "AUGMENT_DEFAULTS": "amod_bench.data.transforms",
    "BUNDLED": "amod_bench.data.bundled",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'amod_bench.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
