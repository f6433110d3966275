"""`load_suite`: read a suite file, apply `--set` overrides, build the typed `Suite` (every
problem collected, none raised early), expand it once to find what only expansion finds,
and raise one SuiteError listing them all."""
from __future__ import annotations

import dataclasses
import os

from .axes import Registries, build_grid, build_ignore, build_ref, build_router_options, build_rules
from .expand import expand_into
from .fields import INVALID, build, unknown_keys
from .overrides import apply_override, check_shadowed
from .paths import missing_inputs, resolve_path
from .problems import Errors, Where, hint, show
from .schema import DEFAULT_IGNORE, NAME_RE, WANDB_PROJECT_RE, InitFrom, Select, Stage, Suite, Tracking
from .yaml_reader import YamlMap, YamlSeq, join_path, merge, parse_yaml, read_text

_STAGE_ONLY = ("name", "exclude", "include", "init_from", "select")
_STAGE_KEYS = ("name", "grid", "exclude", "include", "ignore", "router_options", "pretrained",
               "init_from", "select", "recipe", "resources")


def load_suite(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), *,
               check_data: bool = True, base_dir: str | None = None) -> Suite:
    """Parse and validate a suite file; raise SuiteError listing every problem.

    Args:
        path: the YAML file.
        overrides: `KEY.PATH=VALUE` strings (`--set`), applied in order, e.g.
            `defaults.recipe.epochs=1` or `stages.search.grid.seed=[0,1]`.
        check_data: also require every dataset and checkpoint file to exist
            (`bench.py run`); `plan` passes False and only warns.
        base_dir: where relative paths resolve; default the working directory.
    """
    source = os.fspath(path)
    errors = Errors()
    data = parse_yaml(read_text(source), source, errors)
    if data is None and not errors.problems:
        errors.add(("(top level)", source, 1), "empty suite file: expected a mapping with name and stages")
    elif data is not None and not isinstance(data, YamlMap):
        allowed = [f.name for f in dataclasses.fields(Suite) if f.name not in ("source", "base_dir", "where")]
        errors.add(("(top level)", source, 1), f"expected a mapping of suite fields, got {show(data)}"
                   + hint("", allowed + ["defaults"]))
    if not isinstance(data, YamlMap):
        errors.raise_if_any()
    for i, text_override in enumerate(overrides, start=1):
        apply_override(data, i, text_override, errors)
    check_shadowed(data, overrides, errors)
    suite, stage_names = _build_suite(data, source, os.path.abspath(base_dir or os.getcwd()), errors)
    expand_into(suite, errors, stage_names)
    if check_data:
        for message, where in missing_inputs(suite):
            errors.add(where, message)
    errors.raise_if_any()
    return suite


def _build_suite(data: YamlMap, source: str, base_dir: str, errors: Errors) -> tuple[Suite, list[str]]:
    """The suite from its parsed tree, plus the names of all stages in file order.

    Stages with problems are left out of the returned suite (their problems are in
    `errors`), so that the others can still be expanded and checked."""
    reg = Registries()
    top = build(Suite, data, errors, skip=("stages", "source", "base_dir"), known=("stages", "defaults"))
    if top is None:  # keep going with a stand-in, to report the stages' problems too
        name = data.get("name")
        top = {"name": name if isinstance(name, str) and NAME_RE.match(name) else "suite"}
    defaults = _defaults(data, errors)
    stages_raw = data.get("stages")
    stages: list[Stage] = []
    names: list[str] = []
    if stages_raw is None:
        errors.add(("stages",) + data.here[1:], "required field is missing: a list of stages")
    elif not isinstance(stages_raw, list) or not stages_raw:
        errors.add(data.at("stages"), f"expected a non-empty list of stages, got {show(stages_raw)}")
    else:
        seen: dict[str, int] = {}
        for i, raw in enumerate(stages_raw):
            if not isinstance(raw, YamlMap):
                errors.add(stages_raw.at(i), f"expected a stage mapping, got {show(raw)}")
                continue
            names.append(str(raw.get("name", f"stages[{i}]")))
            stage = _build_stage(merge(defaults, raw), errors, reg)
            if stage is INVALID:
                continue
            if stage.name in seen:
                errors.add(raw.at("name"), f"duplicate stage name '{stage.name}' (also stages[{seen[stage.name]}])")
                continue
            seen[stage.name] = i
            stages.append(stage)
    output = resolve_path(top.pop("output", None) or os.path.join("results", top["name"]), base_dir)
    storage = top.pop("storage", None)
    storage = resolve_path(storage, base_dir) if storage else os.path.join(output, "ray")
    if "tracking" in top:
        top["tracking"] = _tracking(top["tracking"], data["tracking"], base_dir, errors)
    suite = Suite(**top, output=output, storage=storage, stages=tuple(stages), source=os.path.abspath(source),
                  base_dir=base_dir, where={k: data.at(k) for k in data})
    return suite, names


def _tracking(tracking: Tracking, raw: YamlMap, base_dir: str, errors: Errors) -> Tracking:
    """The tracking section with its folder or file-store URI made absolute (the driver's working
    directory may differ from where the suite was loaded); a W&B uri must name a project."""
    uri = tracking.uri
    if uri is None or tracking.backend == "none":
        return tracking
    if tracking.backend == "wandb":
        if not WANDB_PROJECT_RE.match(uri):
            errors.add(raw.at("uri"), f"expected a W&B project, PROJECT or ENTITY/PROJECT, got {uri!r}")
        return tracking
    if tracking.backend == "mlflow":  # a bare path or file: URI is a local store; others stay as written
        if uri.startswith("file:") and not uri.startswith("file://"):
            uri = "file:" + resolve_path(uri[len("file:"):], base_dir)
        elif ":" not in uri:
            uri = resolve_path(uri, base_dir)
    else:  # a TensorBoard log folder (URIs unchanged)
        uri = resolve_path(uri, base_dir)
    return dataclasses.replace(tracking, uri=uri)


def _defaults(data: YamlMap, errors: Errors) -> YamlMap:
    """The `defaults` block, keeping only keys a stage may inherit."""
    raw = data.get("defaults")
    if raw is None:
        return YamlMap()
    if not isinstance(raw, YamlMap):
        errors.add(data.at("defaults"), f"expected a mapping of stage fields, got {show(raw)}")
        return YamlMap()
    allowed = [k for k in _STAGE_KEYS if k not in _STAGE_ONLY]
    out = YamlMap()
    out.here = raw.here
    for key, value in raw.items():
        if key in _STAGE_ONLY:
            errors.add(raw.at(key), f"'{key}' belongs to a stage, not to defaults")
        elif key not in allowed:
            errors.add(raw.at(key), "unknown key" + hint(key, allowed))
        else:
            out[key] = value
            out.where[key] = raw.at(key)
    return out


def _build_stage(data: YamlMap, errors: Errors, reg: Registries):
    """One stage from its mapping (defaults already merged in)."""
    simple = YamlMap({k: v for k, v in data.items() if k in ("name", "pretrained", "recipe", "resources")})
    simple.here, simple.where = data.here, data.where
    custom = ("grid", "exclude", "include", "ignore", "router_options", "init_from", "select")
    unknown_keys(data, _STAGE_KEYS, errors)
    kwargs = build(Stage, simple, errors, skip=custom, known=custom)
    ok = kwargs is not None
    kwargs = kwargs or {}
    if "grid" not in data:
        errors.add((join_path(data.here[0], "grid"),) + data.here[1:],
                   "required field is missing (axes model, router, dataset)")
        ok = False
    else:
        kwargs["grid"] = build_grid(data["grid"], data.at("grid"), errors, reg)
    for key in ("exclude", "include"):
        if key in data:
            kwargs[key] = build_rules(data[key], data.at(key), key, errors, reg)
    if "ignore" in data:
        ignore = build_ignore(data["ignore"], data.at("ignore"), errors, reg)
        kwargs["ignore"] = ignore if ignore is INVALID else {**DEFAULT_IGNORE, **ignore}
    if "router_options" in data:
        kwargs["router_options"] = build_router_options(data["router_options"], data.at("router_options"),
                                                        errors, reg)
    for key, cls in (("init_from", InitFrom), ("select", Select)):
        if data.get(key) is not None:
            kwargs[key] = build_ref(cls, data[key], data.at(key), errors)
    for key in ("ignore", "router_options", "init_from", "select"):
        if kwargs.get(key) is INVALID:  # reported; check the rest of the stage without it
            del kwargs[key]
    if not ok or any(v is INVALID for v in kwargs.values()):
        return INVALID
    return Stage(**kwargs, where=_where_index(data))


def _where_index(data: YamlMap) -> dict[str, Where]:
    """Dotted key -> where it was written, two levels deep ('' = the stage itself)."""
    where = {"": data.here}
    for key, value in data.items():
        where[key] = data.at(key)
        if isinstance(value, YamlMap):
            where.update({f"{key}.{k}": value.at(k) for k in value})
        elif isinstance(value, YamlSeq):
            where.update({f"{key}[{i}]": value.at(i) for i in range(len(value))})
    return where


# ---------------------------------------------------------------------------------------
# Expansion
