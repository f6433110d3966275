"""Grid axes and the per-router mappings of a stage: each value parsed, normalised and
checked against the model, router and dataset registries (names only: no torch)."""
from __future__ import annotations

import dataclasses
from typing import Any

from amod_bench.data.bundled import BUNDLED
from amod_bench.models import list_models
from amod_bench.routers import list_routers, router_traits

from .fields import INVALID, build_obj, checked, typed, unknown_keys
from .problems import Errors, hint, show
from .schema import CLS_POLICIES, IGNORABLE_AXES, RECIPE_FIELDS, ROUTED_LAYERS_RE, STANDARD_AXES, Grid, Recipe
from .yaml_reader import YamlMap, join_path, plain, seq_of, where_in

AXIS_NAMES = (*STANDARD_AXES, *RECIPE_FIELDS)


class Registries:
    """Names the suite may use, from the model / router / dataset registries, read once per load."""

    def __init__(self) -> None:
        self.models = sorted(list_models())
        self.routers = sorted(list_routers())
        self.bundled = sorted(BUNDLED)
        self._options: dict[str, dict[str, Any]] = {}

    def router_options(self, router: str) -> dict[str, Any]:
        """Option name -> type annotation, for the options a registered `router` declares."""
        if router not in self._options:
            self._options[router] = dict(router_traits(router).options)
        return self._options[router]


def axis_value(axis: str, value: Any, where, errors: Errors, reg: Registries, names: bool = True):
    """Normalise one axis value; `names` also checks model / router names against the registries."""
    if axis in RECIPE_FIELDS:
        out = typed(Recipe, axis, value, where, errors)
        if dataclasses.is_dataclass(out):
            out = dataclasses.asdict(out)  # augment as an axis: a dict per value
        return out
    if axis in ("model", "router"):
        if not isinstance(value, str):
            errors.add(where, f"expected a string, got {show(value)}")
            return INVALID
        known = reg.models if axis == "model" else reg.routers
        if names and value not in known:
            errors.add(where, f"unknown {axis} '{value}'" + hint(value, known))
            return INVALID
        return value
    if axis == "capacity":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            errors.add(where, f"expected a number, got {show(value)}")
            return INVALID
        if not 0 < value <= 1:
            errors.add(where, f"capacity must be in (0, 1] (fraction of tokens kept), got {value!r}")
            return INVALID
        return float(value)
    if axis == "routed_layers":
        if isinstance(value, str) and ROUTED_LAYERS_RE.match(value.strip()):
            return value.strip()
        if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            if any(v < 0 for v in value) or len(set(value)) != len(value):
                errors.add(where, f"routed_layers block indices must be distinct and >= 0, got {list(value)}")
                return INVALID
            return tuple(sorted(value))
        errors.add(where, f"bad routed_layers spec {show(value)} (allowed: every_other, last:K, "
                          "or a non-empty list of 0-indexed block numbers)")
        return INVALID
    if axis == "cls_policy":
        if value not in CLS_POLICIES:
            errors.add(where, f"unknown cls_policy {show(value)}" + hint(value, CLS_POLICIES))
            return INVALID
        return value
    if axis == "dataset":
        if not isinstance(value, str) or not value.strip():
            errors.add(where, f"expected a dataset spec (bundled:<name> or a folder), got {show(value)}")
            return INVALID
        if value.startswith("bundled:"):
            name = value.split(":", 1)[1]
            if names and name not in reg.bundled:
                errors.add(where, f"unknown dataset '{value}'" + hint(value, [f"bundled:{n}" for n in reg.bundled]))
                return INVALID
        return value
    if axis == "seed":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            errors.add(where, f"seed must be an integer >= 0, got {show(value)}")
            return INVALID
        return value
    raise KeyError(axis)


def axis_values(axis: str, raw: Any, where, errors: Errors, reg: Registries, names: bool = True) -> tuple | Any:
    """A grid entry (scalar or list) -> tuple of normalised values."""
    one_spec_list = axis == "routed_layers" and isinstance(raw, list) and raw and all(isinstance(v, int) for v in raw)
    if isinstance(raw, list) and not one_spec_list:
        if not raw:
            errors.add(where, "empty list: the grid would have no cells")
            return INVALID
        values = [axis_value(axis, v, where_in(raw, i, where), errors, reg, names) for i, v in enumerate(raw)]
    else:
        values = [axis_value(axis, raw, where, errors, reg, names)]
    if INVALID in values:
        return INVALID
    return tuple(values)


def build_grid(data: Any, where, errors: Errors, reg: Registries):
    if not isinstance(data, YamlMap):
        errors.add(where, f"expected a mapping of axis -> value(s), got {show(data)}")
        return INVALID
    unknown_keys(data, AXIS_NAMES, errors, " (grid axes: the standard axes and any recipe field)")
    axes, ok = {}, True
    for axis in AXIS_NAMES:
        if axis not in data:
            continue
        values = axis_values(axis, data[axis], data.at(axis), errors, reg)
        ok &= values is not INVALID
        axes[axis] = values
    for axis in ("model", "router", "dataset"):
        if axis not in data:
            errors.add((join_path(data.here[0], axis),) + data.here[1:], "required axis is missing")
            ok = False
    if not ok:
        return INVALID
    recipe = {k: v for k, v in axes.items() if k in RECIPE_FIELDS}
    return Grid(**{k: v for k, v in axes.items() if k in STANDARD_AXES}, recipe=recipe)


def build_rules(data: Any, where, what: str, errors: Errors, reg: Registries) -> tuple[dict, ...] | Any:
    """exclude / include: a list of {axis: value or [values]}; each returned as {axis: tuple}."""
    if data is None:
        return ()
    if not isinstance(data, list):
        errors.add(where, f"expected a list of {{axis: value or [values]}} mappings, got {show(data)}")
        return INVALID
    rules, ok = [], True
    for i, item in enumerate(data):
        item_where = where_in(data, i, where)
        if not isinstance(item, YamlMap) or not item:
            errors.add(item_where, f"expected a non-empty mapping {{axis: value or [values]}}, got {show(item)}")
            ok = False
            continue
        unknown_keys(item, AXIS_NAMES, errors, " (an axis name)")
        rule = {}
        for axis, raw in item.items():
            if axis in AXIS_NAMES:
                # exclude values are not checked against the registries: a typo shows as a rule that matches nothing
                values = axis_values(axis, raw, item.at(axis), errors, reg, names=what == "include")
                ok &= values is not INVALID
                rule[axis] = values
        rules.append(rule)
    return tuple(rules) if ok else INVALID


def _per_router(data: Any, where, errors: Errors, reg: Registries, value_kind: str):
    """The (router, value) entries of a `router -> value` mapping whose router is registered;
    None when `data` is not a mapping. Reports each problem; the second item says if all was well."""
    if not isinstance(data, YamlMap):
        errors.add(where, f"expected a mapping router -> {value_kind}, got {show(data)}")
        return None, False
    entries, ok = [], True
    for router, value in data.items():
        if router not in reg.routers:
            errors.add(data.at(router), f"unknown router '{router}'" + hint(router, reg.routers))
            ok = False
        else:
            entries.append((router, value))
    return entries, ok


def build_ignore(data: Any, where, errors: Errors, reg: Registries):
    entries, ok = _per_router(data, where, errors, reg, "[axes]")
    if entries is None:
        return INVALID
    out = {}
    for router, axes in entries:
        if axes is None:
            axes = []
        if isinstance(axes, str):
            axes = [axes]
        if not isinstance(axes, list):
            errors.add(data.at(router), f"expected a list of axes, got {show(axes)}")
            ok = False
            continue
        for i, axis in enumerate(axes):
            if axis not in IGNORABLE_AXES:
                errors.add(where_in(axes, i, data.at(router)), f"cannot ignore axis {show(axis)}" + hint(axis, IGNORABLE_AXES))
                ok = False
        out[router] = tuple(axes)
    return out if ok else INVALID


def build_router_options(data: Any, where, errors: Errors, reg: Registries):
    entries, ok = _per_router(data, where, errors, reg, "{option: value}")
    if entries is None:
        return INVALID
    out = {}
    for router, options in entries:
        if options is None:
            options = YamlMap()
        if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
            errors.add(data.at(router), f"expected a mapping option -> value, got {show(options)}")
            ok = False
            continue
        accepted = reg.router_options(router)
        for key, value in options.items():
            if key not in accepted:
                errors.add(options.at(key), f"router '{router}' has no option '{key}'"
                           + (hint(key, accepted) if accepted else " (it takes none)"))
                ok = False
            elif checked(accepted[key], value, options.at(key), errors, strict=True) is INVALID:  # 1 for 1.0, not '1'
                ok = False
        out[router] = plain(options)  # as written, not coerced: the cell id hashes what the suite says
    return out if ok else INVALID


def build_ref(cls, data: Any, where, errors: Errors):
    """init_from / select: `STAGE` or a mapping."""
    if isinstance(data, str):
        return cls(stage=data)
    if isinstance(data, YamlMap):
        fixed = YamlMap(data)
        fixed.here, fixed.where = data.here, data.where
        for key in ("match", "by"):  # a single key may be written as a scalar
            if isinstance(data.get(key), str):
                fixed[key] = seq_of(data, key)
        return build_obj(cls, fixed, errors)
    errors.add(where, f"expected a stage name or a mapping, got {show(data)}")
    return INVALID
