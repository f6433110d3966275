"""Checks that need more than one value: a stage's init_from / select references, and each
cell's recipe, resources and routed-layer layout (values may come from different axes)."""
from __future__ import annotations

import functools

from amod_bench.models import model_config
from amod_bench.routers import layout, router_traits

from .problems import Errors, hint
from .schema import CONFIG_KEYS, RECIPE_FIELDS, UNHASHED_KEYS, Stage, Suite

# config keys a rule (init_from.match, select.by) may compare: everything that describes training
_COMPARABLE = tuple(k for k in CONFIG_KEYS if k not in UNHASHED_KEYS + ("stage", "init_from", "select"))


def check_refs(suite: Suite, stage: Stage, order: dict[str, int], by_stage: dict[str, list[dict]],
               errors: Errors) -> bool:
    """init_from / select point at an earlier stage and name known keys; True if cells can be matched."""
    index = order[stage.name]
    ok = True
    for what, ref in (("init_from", stage.init_from), ("select", stage.select)):
        if ref is None:
            continue
        where = stage.at(f"{what}.stage")
        if ref.stage not in order:
            errors.add(where, f"unknown stage '{ref.stage}'" + hint(ref.stage, list(order)))
            ok = False
        elif order[ref.stage] >= index:
            errors.add(where, f"stage '{ref.stage}' does not come before '{stage.name}' "
                              "(stages run in file order; a stage can only use earlier ones)")
            ok = False
        elif not by_stage.get(ref.stage):
            ok = False  # the source stage has problems of its own, reported there
    if stage.init_from is not None:
        if stage.pretrained is not None:
            errors.add(stage.at("pretrained" if "pretrained" in stage.where else "init_from"),
                       "pretrained and init_from are both set: the init_from checkpoint replaces the "
                       "pretrained weights; set pretrained: null in this stage")
        for key in stage.init_from.match:
            if key not in _COMPARABLE:
                errors.add(stage.at("init_from.match"), f"unknown key '{key}'" + hint(key, _COMPARABLE))
                ok = False
    select = stage.select
    if select is not None:
        where = stage.at("select.param")
        if select.param not in RECIPE_FIELDS:
            errors.add(where, f"'{select.param}' is not a recipe field" + hint(select.param, RECIPE_FIELDS))
            ok = False
        elif select.param in stage.grid.recipe or any(select.param in rule for rule in stage.include):
            errors.add(where, f"'{select.param}' is both selected and a grid axis of this stage; drop one")
            ok = False
        for key in select.by:
            if key not in _COMPARABLE or key == select.param:
                errors.add(stage.at("select.by"), f"unknown key '{key}'"
                           + hint(key, [k for k in _COMPARABLE if k != select.param]))
                ok = False
        source = next((s for s in suite.stages if s.name == select.stage), None)
        if source is not None and order[source.name] < index:
            if source.recipe.eval_split != "heldout" or "eval_split" in source.grid.recipe:
                errors.add(stage.at("select.stage"),
                           f"stage '{source.name}' evaluates on '{source.recipe.eval_split}': a search stage must "
                           "set recipe.eval_split: heldout, so that selection never sees the reported split")
                ok = False
            if ok and select.param not in source.grid.recipe and not any(select.param in r for r in source.include):
                errors.add(where, f"stage '{source.name}' does not search over '{select.param}' "
                                  f"(it is not one of its grid axes)")
                ok = False
    return ok


def check_cell(config: dict, stage: Stage, errors: Errors) -> None:
    """Checks that need a whole cell (values may come from different axes)."""
    epochs = config["epochs"]
    if config["warmup_epochs"] is not None and epochs is not None and config["warmup_epochs"] >= epochs:
        errors.add(stage.at("recipe.warmup_epochs"),
                   f"warmup_epochs ({config['warmup_epochs']:g}) must be < epochs ({epochs:g})")
    if config["eval_every"] is not None and epochs is not None and config["eval_every"] > epochs:
        errors.add(stage.at("recipe.eval_every"),
                   f"eval_every ({config['eval_every']:g} epochs) is longer than training ({epochs:g} epochs)")
    workers = stage.resources.workers
    if config["batch_size"] is not None and config["batch_size"] % workers:
        errors.add(stage.at("resources.workers"),
                   f"global batch_size {config['batch_size']} does not split evenly across {workers} workers")
    gpus = stage.resources.gpus_per_worker
    if workers > 1 and 0 < gpus < 1:
        errors.add(stage.at("resources.gpus_per_worker"),
                   f"fractional gpus_per_worker ({gpus:g}) with {workers} workers would put several DDP ranks "
                   "on one GPU, which NCCL rejects; use whole GPUs or one worker")
    _check_layout(config, stage, errors)


def _check_layout(config: dict, stage: Stage, errors: Errors) -> None:
    """routed_layers fits the model's depth, and attention-scored routers get an unrouted predecessor."""
    depth = _model_depth(config["model"])
    try:
        routed = layout.resolve_routed_layers(depth, config["routed_layers"])
        if router_traits(config["router"]).reads_attention:
            layout.check_attention_predecessors(config["router"], routed)
    except ValueError as exc:
        errors.add(stage.at("grid.routed_layers"), f"model '{config['model']}' ({depth} blocks), router "
                                                   f"'{config['router']}': {exc}")


@functools.cache
def _model_depth(name: str) -> int:
    """Blocks of a registered model (model_config reads a table; cached as it is asked per cell)."""
    return model_config(name)["depth"]
