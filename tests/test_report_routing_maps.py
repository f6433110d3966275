"""Routing maps: kept-patch masks, the figure layout, skips without checkpoints, and the real model path."""
import io

import numpy as np
import pandas as pd
import pytest
import torch

from amod_bench.report import routing_maps as rm
from amod_bench.report.groups import add_variant_columns
from amod_bench.report.load import load_results
from amod_bench.report.output import save_figure
from fixtures_report import DENSE_KNOTS, Cell, write_suite


def test_keep_mask_maps_token_indices_to_patches():
    mask, cls_kept = rm.keep_mask(np.array([0, 1, 5, 9]), (3, 3))
    assert cls_kept
    assert mask.tolist() == [[True, False, False], [False, True, False], [False, False, True]]
    mask, cls_kept = rm.keep_mask(np.array([2, 3]), (3, 3))
    assert not cls_kept and mask.sum() == 2 and mask[0, 1] and mask[0, 2]


class FakeRouted(torch.nn.Module):
    """Keeps the first k patch tokens in block 1 and the CLS plus the last ones in block 3."""

    def __init__(self, grid=(4, 4)):
        super().__init__()
        self.patch_embed = type("PE", (), {"grid_size": grid})()
        self.num_prefix_tokens = 1
        self.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "input_size": (3, 16, 16)}

    def forward(self, x, return_routing=False):
        b = x.shape[0]
        kept = {1: torch.arange(1, 5).repeat(b, 1), 3: torch.tensor([0, 14, 15, 16]).repeat(b, 1)}
        return torch.zeros(b, 10), kept


def fake_images(config, model, n):
    return torch.zeros(n, 3, 16, 16), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def suite_with_checkpoints(tmp_path, model="vit_nano_patch4_28", extra=None):
    cells = [Cell("dense", None, 0, DENSE_KNOTS, model=model)]
    for router in ("amod", "mod", "cls", "random"):
        for s in (0, 1):
            ckpt = tmp_path / "ckpt" / f"{router}-{s}"
            cells.append(Cell(router, 0.5, s, DENSE_KNOTS, model=model, checkpoint=str(ckpt) if s == 1 else None,
                              extra={"img_size": 28, **(extra or {})}))
    root = write_suite(tmp_path, "maps", cells)
    res = load_results(root)
    frame, _, _ = add_variant_columns(res.cells)
    return root, frame


def test_cells_without_checkpoints_are_skipped_with_messages(tmp_path):
    _, frame = suite_with_checkpoints(tmp_path)  # checkpoint folders named but never written
    figures, messages = rm.routing_maps(frame, build=lambda c, w: FakeRouted(), images_fn=fake_images)
    assert figures == []
    assert messages == ["routing maps: no amod/mod/cls cell kept a checkpoint (summary.json checkpoint null "
                        "or its model.safetensors missing); skipped"]


def test_figure_layout_and_one_map_per_workload(tmp_path):
    _, frame = suite_with_checkpoints(tmp_path)
    for router in ("amod", "mod"):  # cls keeps none: it gets its own message, amod and mod are drawn
        (tmp_path / "ckpt" / f"{router}-1").mkdir(parents=True)
        (tmp_path / "ckpt" / f"{router}-1" / "model.safetensors").write_bytes(b"")
    figures, messages = rm.routing_maps(frame, n_images=2, build=lambda c, w: FakeRouted(), images_fn=fake_images)
    assert messages == ["routing maps: no checkpoint kept for any seed of finetune / vit_nano_patch4_28 / digits "
                        "| cls | C=0.5 | ; skipped"]
    assert len(figures) == 1
    name, fig, caption = figures[0]
    assert name == "routing_maps_finetune_vit_nano_patch4_28_digits_C_0.5" and "2 validation images" in caption
    axes = np.array(fig.axes).reshape(2 * 2, 3)  # (amod, mod) x 2 images rows; input + blocks 1, 3
    assert [ax.get_title() for ax in axes[0]] == ["input", "block 1", "block 3"]
    assert axes[0, 0].get_ylabel().startswith("amod (seed 1)") and axes[2, 0].get_ylabel().startswith("mod (seed 1)")
    assert [t.get_text() for t in axes[0, 1].texts] == ["no CLS"] and [t.get_text() for t in axes[0, 2].texts] == ["CLS"]


def test_a_model_that_fails_to_load_is_reported_not_raised(tmp_path):
    _, frame = suite_with_checkpoints(tmp_path)
    (tmp_path / "ckpt" / "amod-1").mkdir(parents=True)
    (tmp_path / "ckpt" / "amod-1" / "model.safetensors").write_bytes(b"")

    def broken(config, weights):
        raise RuntimeError("bad checkpoint")

    figures, messages = rm.routing_maps(frame, build=broken, images_fn=fake_images)
    assert figures == [] and any("RuntimeError: bad checkpoint" in m for m in messages)


def _write_val_shard(folder, n=4, size=28):
    """A tiny named-shards dataset (toy-val-000000.tar) so the real loader runs in milliseconds."""
    import webdataset as wds
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with wds.TarWriter(str(folder / "toy-val-000000.tar")) as sink:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
            sink.write({"__key__": f"s{i:04d}", "png": buf.getvalue(), "cls": i % 10})


def test_real_models_and_data_end_to_end(tmp_path):
    from safetensors.torch import save_file

    from amod_bench import models

    shards = tmp_path / "shards"
    _write_val_shard(shards)
    root, frame = suite_with_checkpoints(tmp_path, extra={"dataset_path": str(shards), "num_classes": 10,
                                                          "routed_layers": "every_other"})
    for router in ("amod", "mod", "cls"):
        model = models.build_model("vit_nano_patch4_28", router=router, capacity=0.5, num_classes=10)
        folder = tmp_path / "ckpt" / f"{router}-1"
        folder.mkdir(parents=True)
        save_file(model.state_dict(), str(folder / "model.safetensors"))
    figures, messages = rm.routing_maps(frame, n_images=2)  # the default build_model + eval_loader path
    assert messages == []
    assert [name for name, _, _ in figures] == ["routing_maps_finetune_vit_nano_patch4_28_digits_C_0.5"]
    fig = figures[0][1]
    axes = np.array(fig.axes).reshape(3 * 2, -1)  # (amod, mod, cls) x 2 images
    blocks = [ax.get_title() for ax in axes[0][1:]]
    assert blocks == [f"block {b}" for b in range(1, models.model_config("vit_nano_patch4_28")["depth"], 2)]
    assert all(ax.texts[0].get_text() in ("CLS", "no CLS") for ax in axes[:, 1:].flat)
    assert save_figure(fig, tmp_path, "map")[0].stat().st_size > 5_000
    # capacity 0.5 of 50 tokens (49 patches + CLS): every routed block keeps k = 25
    chosen, _ = rm.select_cells(frame)
    sample = rm.load_sample(chosen.iloc[0], n_images=2)
    assert sample.grid == (7, 7) and set(sample.kept) == {1, 3, 5}
    assert all(v.shape == (2, 25) for v in sample.kept.values())
    assert sample.images.shape == (2, 28, 28, 3) and 0 <= sample.images.min() and sample.images.max() <= 1


def test_select_cells_prefers_the_lowest_seed_with_a_checkpoint(tmp_path):
    _, frame = suite_with_checkpoints(tmp_path)
    (tmp_path / "ckpt" / "amod-1").mkdir(parents=True)
    (tmp_path / "ckpt" / "amod-1" / "model.safetensors").write_bytes(b"")
    chosen, _ = rm.select_cells(frame)
    assert isinstance(chosen, pd.DataFrame) and chosen["router"].tolist() == ["amod"]
    assert chosen["seed"].tolist() == [1]
