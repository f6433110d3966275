"""Loader throughput: images/s of the training loader decoding real JPEGs from WebDataset shards.

Random crops of scikit-learn's two bundled photographs (500x375, quality 90) are
written as shards through `amod_bench.data` and read back with the training
augmentation; the rate is set against the samples/s of the training step the
loader feeds (`workers_for_1_5x`: loader workers that keep 1.5x ahead of it).
`amod_bench.data` (webdataset) is imported only inside `loader_throughput`.
"""
from __future__ import annotations

import math
import os
import tempfile
import time

from .measure import error_text


def _write_jpegs(root: str, count: int, seed: int) -> None:
    """`count` real RGB photographs (random crops of sklearn's china/flower), 500x375 JPEG q90,
    as ImageFolder train/val trees with two classes."""
    import numpy as np
    import sklearn.datasets
    from PIL import Image

    folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    photos = [Image.open(os.path.join(folder, name)).convert("RGB") for name in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(seed)
    n_val = max(2, count // 10)
    for i in range(count + n_val):
        label = i % 2
        photo = photos[label]
        w, h = photo.size
        cw = int(rng.integers(w // 2, w + 1))
        ch = min(h, int(cw * 3 / 4))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((500, 375), Image.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        split = "train" if i < count else "val"
        out = os.path.join(root, split, f"class{label}")
        os.makedirs(out, exist_ok=True)
        image.save(os.path.join(out, f"img{i:05d}.jpg"), quality=90)


def loader_throughput(*, images: int, workers: int, batch_size: int, img_size: int, mean, std,
                      seed: int = 0) -> dict:
    """Images/s of the training loader reading `images` JPEGs from shards (first batch excluded)."""
    from amod_bench.data import open_dataset, train_loader
    from amod_bench.data.sources import ImageFolderSource
    from amod_bench.data.writer import write_shards

    batch_size = max(1, min(batch_size, images // 2))
    with tempfile.TemporaryDirectory(prefix="amod_perf_loader_") as tmp:
        raw, shards = os.path.join(tmp, "raw"), os.path.join(tmp, "shards")
        _write_jpegs(raw, images, seed)
        write_shards(ImageFolderSource(raw, name="perf"), shards, num_shards=max(2, 2 * max(workers, 1)),
                     workers=1, progress=False, image_format="jpg")
        ds = open_dataset(shards)
        loader = train_loader(ds, "train", batch_size=batch_size, img_size=img_size, mean=mean, std=std,
                              seed=seed, epoch=0, rank=0, world_size=1, num_workers=workers)
        count, start = 0, None
        for batch in loader:
            if start is None:  # the first batch pays worker start-up and shard opening
                start = time.perf_counter()
                continue
            count += batch[0].shape[0]
        elapsed = time.perf_counter() - start if start is not None else 0.0
    rate = count / elapsed if count and elapsed > 0 else None
    return {"loader_images": images, "loader_workers": workers, "loader_batch_size": batch_size,
            "loader_img_size": img_size, "jpeg_size": "500x375", "jpeg_quality": 90,
            "images_timed": count, "images_per_sec": rate,
            "images_per_sec_per_worker": None if rate is None else rate / max(workers, 1)}



def loader_rows(args, cfg: dict, img_size: int, step_rows: list[dict], log) -> list[dict]:
    """Loader images/s per worker against the training step's samples/s (dense and the fastest routed)."""
    size = args.loader_img_size or img_size
    log(f"loader: {args.loader_images} JPEGs -> {size}px, {args.loader_workers} worker(s)")
    try:
        stats = loader_throughput(images=args.loader_images, workers=args.loader_workers,
                                  batch_size=args.loader_batch_size, img_size=size, mean=cfg["mean"], std=cfg["std"],
                                  seed=args.seed)
    except Exception as exn:
        return [{"kind": "loader", "error": error_text(exn)}]
    timed = [r for r in step_rows if r["kind"] == "step" and r.get("train_samples_per_sec")]
    feeds = [r for r in timed if r["router"] == "dense"]
    routed = [r for r in timed if r["router"] != "dense"]
    if routed:
        feeds.append(max(routed, key=lambda r: r["train_samples_per_sec"]))
    rows = []
    for feed in feeds or [None]:
        row = {"kind": "loader", **stats, "error": None}
        per_worker = stats["images_per_sec_per_worker"]
        if feed is not None:
            need = feed["train_samples_per_sec"]
            row.update(feeds_router=feed["router"], feeds_capacity=feed["capacity"], feeds_model=feed["model"],
                       feeds_img_size=feed["img_size"], step_samples_per_sec=need,
                       loader_over_step=per_worker / need if per_worker else None,
                       workers_for_1_5x=math.ceil(1.5 * need / per_worker) if per_worker else None)
        rows.append(row)
    return rows
