"""The training loop every cell runs, on every Ray Train worker.

`train_loop_per_worker({"run": CellRun})` reads top to bottom: data -> model ->
optimizer -> resume -> (eval, checkpoint, report) / train steps -> stop. It knows
Ray Train (rank, DDP, checkpoints, `ray.train.report`) and nothing of Tune, suite
files or result files: the runner turns each report into result rows.

Each evaluation reports one row (keys in docs/ARCHITECTURE.md) together with a
checkpoint that holds every row up to it (`metrics.jsonl`) and the RNG state.
A worker group that starts from a checkpoint (after a worker failure, or on the
rerun of an interrupted or killed suite) first reports those rows as the cell's
history, then trains on from that step exactly as an uninterrupted run would:
rows the driver never received, because it died between the worker's checkpoint
and its report, come back from the checkpoint, and rows after it are trained
again and replace any the driver kept. A non-finite training loss ends the cell
with a final row whose `status` is `diverged`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from amod_bench import provenance
from amod_bench.costs import CellCosts
from amod_bench.suite import CellConfig, Recipe

CHECKPOINT_WEIGHTS = "model.safetensors"   # timm state-dict keys: loadable by build_model(pretrained=...)
CHECKPOINT_STATE = "train_state.pt"        # optimizer + counters + RNG state; loaded with weights_only=True
CHECKPOINT_ROWS = "metrics.jsonl"          # every evaluation row up to the checkpoint: the history travels with it
DIVERGENCE_CHECK_EVERY = 10                # steps between loss checks: each one is a device sync


@dataclass(frozen=True)
class CellRun:
    """What one cell trains: the suite's config, its costs, and what only the run knows."""

    config: CellConfig
    costs: CellCosts
    init_weights: str | Callable[[], str] | None = None  # "timm", a weights file, or (prestart) a call that waits for the parent's
    picked: dict = field(default_factory=dict)  # a search's pick: recipe field -> value (select stages)

    @property
    def recipe(self) -> Recipe:
        return dataclasses.replace(self.config.recipe, **self.picked)


class CheckpointNotWritten(OSError):
    """A checkpoint that could not be copied to the suite's storage; the message names it."""


def get_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, schedule: str) -> float:
    """Linear warm-up, then cosine to zero (or constant)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    # timm's grouping: no weight decay on norms, biases, position embeddings and the CLS token.
    from timm.optim import param_groups_weight_decay

    groups = param_groups_weight_decay(model, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    # fused: one kernel for all parameters instead of ~10 per tensor, the same update to
    # rounding; a small ViT's step on the CPU is mostly that overhead (see docs/DECISIONS.md)
    return torch.optim.AdamW(groups, lr=recipe.lr, fused=True)


@torch.no_grad()
def evaluate(model, loader, device, autocast) -> dict:
    """Top-1/top-5/loss over the whole split: each rank counts its share, one all-reduce sums them."""
    model.eval()
    totals = torch.zeros(5, dtype=torch.float64, device=device)  # correct1, correct5, loss_sum, n, skipped
    for images, labels, skipped in loader:
        if labels.numel() == 0:  # a loader worker whose samples were all skipped reports only the count
            totals[4] += float(skipped)
            continue
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast:
            logits = model(images)
        top5 = logits.topk(min(5, logits.shape[-1]), dim=-1).indices  # (B, 5)
        hits = top5.eq(labels[:, None])
        totals += torch.stack([
            hits[:, 0].sum().double(),
            hits.any(dim=-1).sum().double(),
            F.cross_entropy(logits.float(), labels, reduction="sum").double(),
            torch.tensor(float(labels.numel()), device=device, dtype=torch.float64),
            skipped.to(device).double().sum(),
        ])
    if dist.is_initialized():
        dist.all_reduce(totals)
    correct1, correct5, loss_sum, n, skipped = totals.tolist()
    model.train()
    if n == 0:
        raise RuntimeError("evaluation saw no samples: the eval split is empty on every rank")
    return {"val_top1": 100.0 * correct1 / n, "val_top5": 100.0 * correct5 / n,
            "val_loss": loss_sum / n, "val_samples": int(n), "val_skipped": int(skipped)}


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer, state: dict, rows: list[dict]) -> None:
    from safetensors.torch import save_file

    from amod_bench.results import CellFiles

    weights = {k: v.detach().contiguous().cpu() for k, v in _unwrap(model).state_dict().items()}
    save_file(weights, str(folder / CHECKPOINT_WEIGHTS))
    # rank 0's RNG streams (torch's, and modules' own such as the random router's); every rank
    # seeds the same streams and draws alike, so restoring them on every rank resumes all of
    # them where they were
    rng = {"torch_rng": torch.get_rng_state(), "module_rng": _module_rng_states(model)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda_rng"] = torch.cuda.get_rng_state()
    torch.save({"optimizer": optimizer.state_dict(), **state, **rng}, folder / CHECKPOINT_STATE)
    CellFiles(folder).write_metrics(rows)


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer) -> tuple[dict, list[dict] | None]:
    """(counters, the rows up to the checkpoint or None for a checkpoint without them); restores
    the weights, the optimizer and the RNG state."""
    from safetensors.torch import load_file

    from amod_bench.results import CellFiles

    _unwrap(model).load_state_dict(load_file(str(folder / CHECKPOINT_WEIGHTS)))
    state = torch.load(folder / CHECKPOINT_STATE, weights_only=True)
    optimizer.load_state_dict(state.pop("optimizer"))
    if "torch_rng" in state:
        torch.set_rng_state(state.pop("torch_rng"))
    for name, module_state in state.pop("module_rng", {}).items():
        _unwrap(model).get_submodule(name).load_rng_state(module_state)
    cuda_rng = state.pop("cuda_rng", None)
    if cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda_rng)
    rows = CellFiles(folder).read_metrics() if (folder / CHECKPOINT_ROWS).exists() else None
    return state, rows


def _module_rng_states(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The position of every module's own random stream (the random router's), by module name."""
    states = {name: module.rng_state() for name, module in _unwrap(model).named_modules()
              if hasattr(module, "rng_state")}
    return {name: state for name, state in states.items() if state is not None}


def _rank_checksums(model: torch.nn.Module, world_size: int) -> list[float]:
    # Position-weighted, so two ranks with permuted or swapped weights still differ.
    flat = torch.cat([p.detach().double().flatten() for p in _unwrap(model).parameters()])
    checksum = (flat * torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)).sum()
    gathered = [torch.zeros_like(checksum) for _ in range(world_size)]
    if dist.is_initialized():
        dist.all_gather(gathered, checksum)
    else:
        gathered = [checksum]
    return [g.item() for g in gathered]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _maybe_inject_fault(step: int, rank: int) -> None:
    """Test-only hook: AMOD_BENCH_TEST_KILL_AT_STEP="<step>:<marker file>" kills the last
    rank's process once at that step (the marker keeps it from firing again after the restart)."""
    spec = os.environ.get("AMOD_BENCH_TEST_KILL_AT_STEP")
    if not spec:
        return
    at_step, marker = spec.split(":", 1)
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    if step == int(at_step) and rank == world_size - 1 and not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    from amod_bench.data import EpochLoaders, ReplayedBatches, ShardCache, eval_loader, open_dataset, train_loader
    from amod_bench.models import build_model

    run: CellRun = loop_config["run"]
    config, recipe, costs = run.config, run.recipe, run.costs
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    torch.manual_seed(config.seed)
    hardware = provenance.hardware(device, world_size)

    # ---- data
    dataset = open_dataset(config.dataset_path)
    if recipe.batch_size % world_size:
        raise ValueError(f"batch_size {recipe.batch_size} is not divisible by {world_size} workers")
    batch_per_rank = recipe.batch_size // world_size
    loader_args = dict(batch_size=batch_per_rank, img_size=costs.img_size, mean=list(costs.mean),
                       std=list(costs.std), rank=rank, world_size=world_size,
                       num_workers=recipe.num_loader_workers, on_error=recipe.on_error)

    # small splits stay in memory: the raw training shards (read again every epoch) and the
    # evaluation batches (identical at every evaluation)
    cache_bytes = int(config.resources.data_cache_mb * 2 ** 20)
    shard_cache = ShardCache(cache_bytes) if recipe.num_loader_workers == 0 else None

    def epoch_batches(epoch: int):
        return train_loader(dataset, split="train", seed=config.seed, epoch=epoch,
                            augment=recipe.augment.chosen(), shard_cache=shard_cache, **loader_args)

    val_batches = ReplayedBatches(eval_loader(dataset, split=recipe.eval_split, **loader_args), cache_bytes)
    steps_per_epoch = len(epoch_batches(0))
    if steps_per_epoch == 0:
        raise ValueError(f"{config.dataset}: fewer training samples than one global batch "
                         f"({recipe.batch_size})")
    total_steps = round(recipe.epochs * steps_per_epoch)
    warmup_steps = round(recipe.warmup_epochs * steps_per_epoch)
    eval_every = max(1, round(recipe.eval_every * steps_per_epoch))
    macs_per_step = costs.train_macs_per_sample * recipe.batch_size
    epoch_loaders = EpochLoaders(epoch_batches, last_epoch=math.ceil(total_steps / steps_per_epoch) - 1)

    # ---- model and optimizer; an earlier stage's checkpoint or a timm checkpoint seeds the weights
    init_weights = run.init_weights
    if callable(init_weights):  # a checkpoint still in training: this call waits for it
        init_weights = init_weights()
    model = build_model(config.model, router=config.router, capacity=config.capacity,
                        routed_layers=config.routed_layers, cls_policy=config.cls_policy,
                        num_classes=dataset.num_classes, img_size=costs.img_size,
                        pretrained=init_weights, drop_path_rate=recipe.drop_path,
                        **config.router_options)
    model = ray.train.torch.prepare_model(model)
    optimizer = build_optimizer(model, recipe)

    # ---- resume after a worker failure or an interrupted suite
    state = {"step": 0, "samples": 0, "train_seconds": 0.0, "eval_seconds": 0.0, "train_macs": 0, "skipped": 0}
    rows: list[dict] = []  # every evaluation row so far, saved with each checkpoint
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            counters, saved_rows = load_checkpoint(Path(folder), model, optimizer)
            state.update(counters, skipped=counters.get("skipped", 0) if rank == 0 else 0)
        if saved_rows is not None:  # the truth up to the checkpoint, whatever reached the driver
            rows = saved_rows
            ray.train.report({"history": rows, "resumed_from": checkpoint.path})

    def report(row: dict, with_checkpoint: bool) -> None:
        # Every rank calls report (it is a barrier); rank 0 alone writes the checkpoint.
        if row["status"] == "running":  # an evaluation row (not the last one of a diverged run)
            rows.append(row)
        if with_checkpoint and rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                save_checkpoint(Path(folder), model, optimizer, state, rows)
                try:  # report() copies the checkpoint into the cell's storage
                    ray.train.report({"row": row}, checkpoint=ray.train.Checkpoint.from_directory(folder))
                except OSError as error:  # a full or read-only storage: name it (Ray's message does not)
                    raise CheckpointNotWritten(f"cannot write the checkpoint of step {row['step']} to the "
                                               f"suite's storage {config.storage}: {error}") from error
        else:
            ray.train.report({"row": row})

    def eval_row(train_loss: float) -> dict:
        tic_eval = time.perf_counter()
        row = {"step": state["step"], "epoch": state["step"] / steps_per_epoch,
               "samples": state["samples"], "train_macs": state["train_macs"],
               "train_seconds": state["train_seconds"],
               "lr": get_lr(state["step"], total_steps, warmup_steps, recipe.lr, recipe.schedule),
               "train_loss": train_loss, "status": "running", "hardware": hardware}
        row.update(evaluate(model, val_batches, device, autocast))
        train_skipped = torch.tensor(float(state["skipped"]), device=device)
        if dist.is_initialized():
            dist.all_reduce(train_skipped)
        row["train_skipped"] = int(train_skipped.item())  # over the whole run, all ranks; val_skipped: this eval
        # rank 0 carries the total so far (and saves it with the checkpoint), the others count anew
        state["skipped"] = row["train_skipped"] if rank == 0 else 0
        if state["step"] == total_steps:  # proof that DDP kept every rank's weights identical
            row["rank_checksums"] = _rank_checksums(model, world_size)
        state["eval_seconds"] += time.perf_counter() - tic_eval
        row["eval_seconds"] = state["eval_seconds"]
        return row

    if state["step"] == 0:  # the step-0 row shows how much a routed model keeps of its starting point
        report(eval_row(train_loss=float("nan")), with_checkpoint=False)

    # ---- train
    model.train()
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    tic = time.perf_counter()
    while state["step"] < total_steps:
        epoch, offset = divmod(state["step"], steps_per_epoch)
        for batch_index, (images, labels, skipped) in enumerate(epoch_loaders(epoch)):
            if batch_index < offset:  # resuming mid-epoch: skip what the checkpoint already trained on
                continue
            step = state["step"]
            _maybe_inject_fault(step, rank)
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, total_steps, warmup_steps, recipe.lr, recipe.schedule)
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast:
                loss = F.cross_entropy(model(images), labels, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()

            state["step"] += 1
            state["samples"] += recipe.batch_size
            state["train_macs"] += macs_per_step
            state["skipped"] += int(skipped)
            loss_sum += loss.detach().float()
            loss_count += 1

            at_eval = state["step"] % eval_every == 0 or state["step"] == total_steps
            if at_eval or state["step"] % DIVERGENCE_CHECK_EVERY == 0:
                finite = torch.isfinite(loss_sum).float()  # a sync point; all ranks agree on stopping
                if dist.is_initialized():
                    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
                if finite.item() == 0:
                    state["train_seconds"] += time.perf_counter() - tic
                    report({"step": state["step"], "epoch": state["step"] / steps_per_epoch,
                            "train_loss": float("nan"), "status": "diverged"}, with_checkpoint=False)
                    return
            if at_eval:
                state["train_seconds"] += time.perf_counter() - tic
                report(eval_row(train_loss=loss_sum.item() / loss_count), with_checkpoint=True)
                loss_sum.zero_()
                loss_count = 0
                tic = time.perf_counter()
            if state["step"] >= total_steps:
                break
