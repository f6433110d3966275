"""Expansion: a validated suite -> its cells, in stage order then grid order.

A stage's cells are its grid product minus `exclude` rules plus `include` cells, with
`ignore` applied; each gets a config (`Cell.config`, a frozen `CellConfig`), the init_from /
select links to earlier stages, and an id whose hash covers what alters training (the package
docstring has the rules). Expansion itself works on the flat JSON form (`CellConfig.to_json`):
rules, links and the id hash all compare plain values."""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from typing import Any

from .checks import check_cell, check_refs
from .paths import dataset_path, dataset_short_name, resolve_path
from .problems import Errors
from .cell import Cell, CellConfig, SearchChoice, jsonable
from .schema import IGNORABLE_AXES, RECIPE_FIELDS, UNHASHED_KEYS, Augment, Stage, Suite


def expand(suite: Suite) -> list[Cell]:
    """The suite's cells, in stage order then grid order. Pure: no file system access.

    Raises SuiteError for the problems only expansion finds (empty grids, duplicate
    ids, init_from / select that match no cell); `load_suite` has already run this.
    """
    errors = Errors()
    cells = expand_into(suite, errors)
    errors.raise_if_any()
    return cells


def _matches(cell: dict, rule: dict) -> bool:
    return all(jsonable(cell[axis]) in [jsonable(v) for v in values] for axis, values in rule.items())


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ".".join(_format_value(v) for v in value)
    if isinstance(value, dict):
        return "_".join(f"{k}{_format_value(v)}" for k, v in sorted(value.items()))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def config_hash(config: dict) -> str:
    """First 8 hex digits of SHA-256 over the canonical JSON of the hashed keys."""
    hashed = {k: v for k, v in config.items() if k not in UNHASHED_KEYS}
    text = json.dumps(jsonable(hashed), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def cell_id(config: dict, tags: list[str]) -> str:
    capacity = "" if config["capacity"] is None else f"-c{config['capacity']:g}"
    prefix = (f"{config['stage']}-{config['model']}-{config['router']}{capacity}-"
              f"{dataset_short_name(config['dataset'])}-s{config['seed']}")
    parts = [_safe(p) for p in [prefix, *tags]]
    return "-".join(parts) + "-" + config_hash(config)


def _cell_tags(combo: dict, recipe_axes: list[str]) -> list[str]:
    tags = [f"{axis}{_format_value(combo[axis])}" for axis in recipe_axes]
    if combo["routed_layers"] != "every_other":
        tags.append(f"rl-{_format_value(combo['routed_layers'])}")
    if combo["cls_policy"] != "compete":
        tags.append(f"cls-{combo['cls_policy']}")
    return tags


def _apply_ignore(combo: dict, ignore: dict[str, tuple[str, ...]]) -> dict:
    out = dict(combo)
    for axis in ignore.get(combo["router"], ()):
        out[axis] = IGNORABLE_AXES[axis]
    return out


def expand_into(suite: Suite, errors: Errors, stage_names: list[str] | None = None) -> list[Cell]:
    """The cells of `suite`, each problem added to `errors` (load_suite passes the collector that
    holds the validation problems, so one SuiteError lists both). `stage_names`: every stage in
    the file, including any left out of `suite` for its problems."""
    cells: list[Cell] = []
    by_stage: dict[str, list[dict]] = {}  # stage -> its cells' flat configs, for init_from / select
    order = {name: i for i, name in enumerate(stage_names or [s.name for s in suite.stages])}
    size = sum(_grid_size(stage) for stage in suite.stages)
    if suite.max_cells is not None and size > suite.max_cells:  # counted, so a huge grid is never built
        errors.add(suite.where.get("max_cells") or suite.where.get("stages") or ("stages", suite.source, 1),
                   f"the grid has {size:,} cells (before exclude and ignore), more than max_cells "
                   f"({suite.max_cells:,}); if that is meant, set max_cells: {size} in the suite or pass "
                   "--allow-large-grid")
        return cells
    for stage in suite.stages:
        by_stage[stage.name] = []
        cells.extend(_expand_stage(suite, stage, order, by_stage, errors))
    return cells


def _grid_size(stage: Stage) -> int:
    """Cells of the grid product plus the include cells, before exclude and ignore shrink it."""
    axes = stage.grid.axes()
    return sum(math.prod(len(v) for v in sub.values())
               for sub in [axes, *(_include_axes(axes, rule) for rule in stage.include)])


def _include_axes(axes: dict[str, tuple], rule: dict[str, tuple]) -> dict[str, tuple]:
    """An include item's own small grid: the axes it names, every grid value for the others."""
    return {name: rule.get(name, axes.get(name, (None,))) for name in dict.fromkeys([*axes, *rule])}


def _expand_stage(suite: Suite, stage: Stage, order: dict[str, int], by_stage: dict[str, list[dict]],
                  errors: Errors) -> list[Cell]:
    refs_ok = check_refs(suite, stage, order, by_stage, errors)
    axes = stage.grid.axes()
    names = list(axes)
    recipe_axes = list(stage.grid.recipe)
    for rule in stage.include:  # a recipe field named only by include cells still tags the ids
        recipe_axes += [a for a in rule if a in RECIPE_FIELDS and a not in recipe_axes]
    stage_axes = [*names, *(a for a in recipe_axes if a not in names)]  # config.json's `axes`

    # grid product minus exclude rules, then include cells: (combo, include index or None)
    combos = [dict(zip(names, values)) for values in itertools.product(*axes.values())]
    hits = [0] * len(stage.exclude)
    kept: list[tuple[dict, int | None]] = []
    for combo in combos:
        matched = [i for i, rule in enumerate(stage.exclude) if _matches(combo, rule)]
        for i in matched:
            hits[i] += 1
        if not matched:
            kept.append((combo, None))
    for i, count in enumerate(hits):
        if count == 0:
            errors.add(stage.at(f"exclude[{i}]"), "exclude rule matches no grid cell (check its values)")
    if not kept:
        errors.add(stage.at("exclude" if stage.exclude else "grid"),
                   f"stage '{stage.name}' has no grid cells left after exclude ({len(combos)} excluded)")
    for i, rule in enumerate(stage.include):
        sub_axes = _include_axes(axes, rule)
        for values in itertools.product(*sub_axes.values()):
            kept.append((dict(zip(sub_axes, values)), i))

    pretrained_path = resolve_path(stage.pretrained, suite.base_dir) if stage.pretrained not in (None, "timm") else None
    out: list[Cell] = []
    seen: dict[str, int | None] = {}
    no_capacity: set[str] = set()
    unmatched = {"init_from": 0, "select": 0}
    for combo, include_index in kept:
        for axis in stage.grid.recipe:  # a recipe axis the include item did not name keeps the recipe value
            if combo.get(axis) is None and include_index is not None and axis not in axes:
                combo[axis] = getattr(stage.recipe, axis)
        combo = _apply_ignore(combo, stage.ignore)
        if combo["capacity"] is None:
            no_capacity.add(combo["router"])
            continue
        config = _cell_config(suite, stage, combo, pretrained_path, stage_axes)
        flat = config.to_json()  # rules, links and the id compare and hash plain values
        check_cell(flat, stage, errors)
        links = {}
        if refs_ok and stage.init_from is not None:
            links["init_from"] = flat["init_from"] = _init_source(stage, flat, by_stage, errors, unmatched)
        if refs_ok and stage.select is not None:
            flat["select"] = _select_marker(stage, flat, by_stage, errors, unmatched)
            links["select"] = None if flat["select"] is None else SearchChoice(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in flat["select"].items()})
        flat["id"] = cell_id(flat, _cell_tags(combo, recipe_axes))
        if flat["id"] in seen:
            if include_index is not None:
                first = seen[flat["id"]]
                errors.add(stage.at(f"include[{include_index}]"),
                           f"duplicate cell id {flat['id']}: this include cell repeats "
                           + ("a grid cell" if first is None else f"include[{first}]"))
            continue  # grid cells that `ignore` made identical collapse into one
        seen[flat["id"]] = include_index
        out.append(Cell(id=flat["id"], stage=stage.name, config=dataclasses.replace(config, id=flat["id"], **links)))
        by_stage.setdefault(stage.name, []).append(flat)
    if no_capacity:
        errors.add(stage.at("grid"),
                   f"grid.capacity is required for router(s) {', '.join(sorted(no_capacity))} "
                   "(only a router whose `ignore` entry lists capacity may leave it out)")
    for what, count in unmatched.items():
        if count > 5:
            errors.add(stage.at(what), f"... and {count - 5} more cells without a {what} match")
    return out


def _cell_config(suite: Suite, stage: Stage, combo: dict, pretrained_path: str | None,
                 stage_axes: list[str]) -> CellConfig:
    """The cell of one grid point, before its id and its links to earlier stages."""
    recipe_values = {k: combo[k] for k in combo if k in RECIPE_FIELDS}
    if isinstance(recipe_values.get("augment"), dict):  # augment as a grid axis: a dict per value
        recipe_values["augment"] = Augment(**recipe_values["augment"])
    if stage.select is not None:
        recipe_values[stage.select.param] = None  # resolved by the runner from the search's results
    return CellConfig(
        id="", suite=suite.name, stage=stage.name, model=combo["model"], router=combo["router"],
        capacity=combo["capacity"], routed_layers=combo["routed_layers"], cls_policy=combo["cls_policy"],
        dataset=combo["dataset"], dataset_path=dataset_path(combo["dataset"], suite.base_dir), seed=combo["seed"],
        recipe=dataclasses.replace(stage.recipe, **recipe_values),
        pretrained=stage.pretrained, pretrained_path=pretrained_path,
        router_options=dict(stage.router_options.get(combo["router"], {})),
        init_from=None, select=None, targets=suite.targets, resources=stage.resources,
        output=suite.output, storage=suite.storage, axes=tuple(stage_axes))


def _describe(config: dict, keys) -> str:
    return ", ".join(f"{k}={config[k]}" for k in keys)


def _init_source(stage: Stage, config: dict, by_stage: dict[str, list[dict]], errors: Errors,
                 unmatched: dict[str, int]) -> str | None:
    """The id of the one cell of stage init_from.stage that equals `config` on init_from.match."""
    ref = stage.init_from
    source = [c for c in by_stage[ref.stage] if all(c[k] == config[k] for k in ref.match)]
    if len(source) == 1:
        return source[0]["id"]
    unmatched["init_from"] += 1
    if unmatched["init_from"] <= 5:
        if not source:
            message = f"no cell of stage '{ref.stage}' has {_describe(config, ref.match)}"
        else:
            message = (f"{len(source)} cells of stage '{ref.stage}' have {_describe(config, ref.match)} "
                       f"({', '.join(c['id'] for c in source[:3])}{', ...' if len(source) > 3 else ''}); "
                       "add keys to init_from.match to pick one (e.g. seed)")
        errors.add(stage.at("init_from"), message)
    return None


def _select_marker(stage: Stage, config: dict, by_stage: dict[str, list[dict]], errors: Errors,
                   unmatched: dict[str, int]) -> dict | None:
    """{stage, param, by, metric, cells, values}: the search cells this cell chooses among."""
    ref = stage.select
    group = [c for c in by_stage[ref.stage] if all(c[k] == config[k] for k in ref.by)]
    if not group:
        unmatched["select"] += 1
        if unmatched["select"] <= 5:
            errors.add(stage.at("select"),
                       f"no cell of stage '{ref.stage}' has {_describe(config, ref.by)} to select from")
        return None
    return {"stage": ref.stage, "param": ref.param, "by": list(ref.by), "metric": ref.metric,
            "cells": [c["id"] for c in group], "values": [c[ref.param] for c in group]}
