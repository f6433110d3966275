"""Routing maps: which patches each routed block keeps, for a few validation images.

For each (workload, recipe, capacity) the lowest-seed finished cell of each
compared router (A-MoD, MoD, CLS-attention by default) that kept a checkpoint
is rebuilt with `amod_bench.models.build_model(..., pretrained=<checkpoint>/
model.safetensors)` and run once on the first `n_images` images of the
validation split (`amod_bench.data.open_dataset` + `eval_loader`, unshuffled,
so every router sees the same images) with `return_routing=True`. Each panel
shows one image with the patches a block drops dimmed; the corner says whether
the CLS token (index 0) was kept.

torch, timm, amod_bench.models and amod_bench.data are imported lazily here
and nowhere else in the report. A cell without a checkpoint (summary
`checkpoint` null or the folder gone), or one that fails to load, is skipped
with a message; the report never fails because of this figure.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

MAP_ROUTERS = ("amod", "mod", "cls")


@dataclass
class RoutingSample:
    """One router's decisions on the same images."""

    label: str  # e.g. "amod (seed 0)"
    images: np.ndarray  # (B, H, W, 3), floats in [0, 1]
    kept: dict[int, np.ndarray]  # block index -> (B, k) kept token indices, 0 = CLS
    grid: tuple[int, int]  # patch grid (rows, cols)
    prefix_tokens: int = 1  # tokens before the patches (CLS)


def checkpoint_file(row: pd.Series) -> Path | None:
    """`<checkpoint>/model.safetensors` of a cell, or None when the summary kept none or it is gone."""
    folder = row.get("checkpoint")
    if not isinstance(folder, str) or not folder:
        return None
    path = Path(folder) / "model.safetensors"
    return path if path.is_file() else None


def select_cells(cells: pd.DataFrame, routers=MAP_ROUTERS) -> tuple[pd.DataFrame, list[str]]:
    """The cells to map (lowest seed per variant, routers in `routers`) and messages for the skipped ones."""
    pool = cells[cells["ok"] & cells["router"].isin(routers)]
    chosen, without = [], []
    for variant, group in pool.groupby("variant", sort=True):
        group = group.sort_values(["seed", "cell"], kind="stable")
        with_ckpt = [row for _, row in group.iterrows() if checkpoint_file(row) is not None]
        if with_ckpt:
            chosen.append(with_ckpt[0])
        else:
            without.append(variant)
    messages = []
    if without and not chosen:
        messages.append(f"routing maps: no {'/'.join(routers)} cell kept a checkpoint (summary.json checkpoint "
                        "null or its model.safetensors missing); skipped")
    elif without:
        messages += [f"routing maps: no checkpoint kept for any seed of {v}; skipped" for v in without]
    frame = pd.DataFrame(chosen).reset_index(drop=True) if chosen else pool.iloc[0:0]
    return frame, messages


def build_from_checkpoint(config: dict, weights: Path):
    """A cell's model (its config.json's architecture and router) with the weights at `weights`."""
    from amod_bench.models import build_model  # lazy: torch and timm only when maps are drawn

    arch = {k: config.get(k) for k in ("capacity", "routed_layers", "cls_policy", "num_classes", "img_size")}
    return build_model(config["model"], router=config["router"], pretrained=str(weights),
                       **{k: v for k, v in arch.items() if v is not None}, **(config.get("router_options") or {}))


def validation_batch(config: dict, model, n_images: int):
    """The first `n_images` validation images of a cell's dataset, normalized as the model expects,
    their labels, and (mean, std): (images (n, C, H, W), labels (n,), mean, std)."""
    import torch

    from amod_bench.data import eval_loader, open_dataset

    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    if "mean" not in cfg:
        import timm.data

        cfg = timm.data.resolve_model_data_config(model)
    mean, std = config.get("mean") or cfg["mean"], config.get("std") or cfg["std"]  # the cell's own, if recorded
    img_size = config.get("img_size") or cfg["input_size"][-1]
    ds = open_dataset(config.get("dataset_path") or config["dataset"], num_classes=config.get("num_classes"))
    loader = eval_loader(ds, "val", batch_size=n_images, img_size=img_size, mean=mean, std=std, rank=0,
                         world_size=1, num_workers=0)
    images, labels, count = [], [], 0
    for batch_images, batch_labels, _skipped in loader:  # batches may end early at a shard's end
        images.append(batch_images), labels.append(batch_labels)
        count += len(batch_images)
        if count >= n_images:
            break
    return torch.cat(images)[:n_images], torch.cat(labels)[:n_images], mean, std


def _map_images(config: dict, model, n_images: int):
    images, _labels, mean, std = validation_batch(config, model, n_images)
    return images, mean, std


def load_sample(row: pd.Series, n_images: int = 4, *, build=build_from_checkpoint,
                images_fn=_map_images) -> RoutingSample:
    """Rebuild a cell's model from its checkpoint and record its routing on `n_images` val images."""
    import torch

    config = json.loads((Path(row["path"]) / "config.json").read_text())
    model = build(config, checkpoint_file(row)).eval()
    x, mean, std = images_fn(config, model, n_images)
    with torch.no_grad():
        _logits, routing = model(x, return_routing=True)
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    embed = getattr(model, "patch_embed", None)
    grid = getattr(embed, "grid_size", None)
    if grid is None:  # no timm PatchEmbed: derive the grid from the patch size
        patch = getattr(embed, "patch_size", 16)
        patch = tuple(patch) if isinstance(patch, (tuple, list)) else (patch, patch)
        grid = (x.shape[-2] // patch[0], x.shape[-1] // patch[1])
    pixels = x * torch.as_tensor(std).view(1, -1, 1, 1) + torch.as_tensor(mean).view(1, -1, 1, 1)
    pixels = pixels.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    kept = {int(b): idx.detach().cpu().numpy() for b, idx in sorted(routing.items())}
    return RoutingSample(label=f"{row['router_label']} (seed {row['seed']})", images=pixels, kept=kept,
                         grid=(int(grid[0]), int(grid[1])), prefix_tokens=prefix)


def keep_mask(indices: np.ndarray, grid: tuple[int, int], prefix_tokens: int = 1) -> tuple[np.ndarray, bool]:
    """(rows x cols bool mask of kept patches, whether token 0 / CLS was kept) for one image."""
    mask = np.zeros(grid[0] * grid[1], dtype=bool)
    patches = indices[indices >= prefix_tokens] - prefix_tokens
    mask[patches[patches < mask.size]] = True
    return mask.reshape(grid), bool((indices == 0).any())


def routing_map_figure(samples: list[RoutingSample], title: str = ""):
    """Rows = router x image, columns = routed blocks; dropped patches dimmed."""
    from .figures import plt  # the report's matplotlib setup (Agg backend)

    blocks = sorted({b for s in samples for b in s.kept})
    n_images = min(s.images.shape[0] for s in samples)
    rows = [(s, i) for s in samples for i in range(n_images)]
    fig, axes = plt.subplots(len(rows), len(blocks) + 1, figsize=(1.5 * (len(blocks) + 1), 1.5 * len(rows)),
                             squeeze=False)
    for r, (sample, i) in enumerate(rows):
        image = sample.images[i]
        axes[r][0].imshow(image)
        axes[r][0].set_ylabel(f"{sample.label}\nimage {i}", fontsize=6)
        for c, block in enumerate(blocks, start=1):
            ax = axes[r][c]
            if block in sample.kept:
                mask, cls_kept = keep_mask(sample.kept[block][i], sample.grid, sample.prefix_tokens)
                scale = (image.shape[0] // mask.shape[0], image.shape[1] // mask.shape[1])
                up = np.kron(mask, np.ones(scale))[: image.shape[0], : image.shape[1]]
                up = np.pad(up, ((0, image.shape[0] - up.shape[0]), (0, image.shape[1] - up.shape[1])))
                ax.imshow(image * (0.2 + 0.8 * up[..., None]))
                ax.text(0.02, 0.98, "CLS" if cls_kept else "no CLS", transform=ax.transAxes, fontsize=5,
                        va="top", color="white", backgroundcolor="black")
            if r == 0:
                ax.set_title(f"block {block}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    axes[0][0].set_title("input", fontsize=7)
    fig.suptitle(title or "kept patches per routed block (dimmed = skipped the block)", fontsize=8)
    fig.tight_layout()
    return fig


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")


def routing_maps(cells: pd.DataFrame, n_images: int = 4, routers=MAP_ROUTERS, *, build=build_from_checkpoint,
                 images_fn=_map_images) -> tuple[list[tuple[str, object, str]], list[str]]:
    """[(name, figure, caption)] per (workload, recipe, capacity), and messages for everything skipped."""
    chosen, messages = select_cells(cells, routers)
    figures = []
    if chosen.empty:
        if not messages:
            messages.append(f"routing maps: no finished {'/'.join(routers)} cell; skipped")
        return figures, messages
    for (workload, recipe, capacity), group in chosen.groupby(["workload", "recipe", "capacity"], sort=True):
        samples = []
        group = group.assign(_r=group["router"].map(lambda r: routers.index(r) if r in routers else len(routers)))
        for _, row in group.sort_values(["_r", "router_label"], kind="stable").iterrows():
            try:
                samples.append(load_sample(row, n_images, build=build, images_fn=images_fn))
            except Exception as exc:  # a map is a nicety: report it, never fail the report
                messages.append(f"routing maps: {row['suite']}/{row['cell']} not drawn "
                                f"({exc.__class__.__name__}: {exc})")
        if not samples:
            continue
        where = f"{workload}{' / ' + recipe if recipe else ''} / C={capacity:g}"
        name = "routing_maps_" + slug(where)
        caption = (f"Routing maps, {where}: {n_images} validation images; per routed block the kept tokens "
                   f"(bright) vs skipped (dimmed); 'CLS' = token 0 kept; lowest-seed cell with a checkpoint.")
        figures.append((name, routing_map_figure(samples, where), caption))
    return figures, messages
