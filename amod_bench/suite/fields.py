"""Typed field values: pydantic checks and coerces each value against the schema's
annotation; each of its errors becomes a Problem at the file:line the YAML reader recorded.

The walk over a dataclass's keys stays here, not in pydantic, for three reasons: an
unknown key gets a did-you-mean hint, a field with a problem is left out (its default
stands in) so that checking goes on and every problem is reported at once, and each
nested mapping keeps its own line numbers."""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import TypeAdapter, ValidationError

from .problems import Errors, Where, hint, show
from .yaml_reader import YamlMap, YamlSeq, join_path

INVALID = object()  # a value whose problem has been reported; the caller leaves it out


def unknown_keys(data: YamlMap, allowed, errors: Errors, extra: str = "") -> None:
    for key in data:
        if key not in allowed:
            errors.add(data.at(key), f"unknown key{extra}" + hint(key, allowed))


def build(cls, data: YamlMap, errors: Errors, skip: tuple[str, ...] = (), known: tuple[str, ...] = ()) -> dict | None:
    """Keyword arguments for dataclass `cls` from `data`; every problem goes to `errors`.

    A field with a problem is left out (its default then stands in), so that checking can
    go on and report everything at once; `load_suite` raises at the end anyway. Returns
    None only when a required field is missing or wrong. `skip`: fields the caller builds
    itself; `known`: further keys that are not unknown."""
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip and f.name != "where"]
    unknown_keys(data, [f.name for f in fields] + list(known), errors)
    kwargs, ok = {}, True
    for f in fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name not in data:
            if required:
                errors.add((join_path(data.here[0], f.name),) + data.here[1:], "required field is missing")
                ok = False
            continue
        value = typed(cls, f.name, data[f.name], data.at(f.name), errors)
        if value is INVALID:
            ok = ok and not required
            continue
        kwargs[f.name] = value
    return kwargs if ok else None


def build_obj(cls, data: YamlMap, errors: Errors):
    """An instance of dataclass `cls` from `data`, or INVALID (see `build`)."""
    kwargs = build(cls, data, errors)
    return INVALID if kwargs is None else cls(**kwargs)


def typed(cls, name: str, value: Any, where: Where, errors: Errors) -> Any:
    """`value` checked and coerced as field `name` of dataclass `cls`, or INVALID."""
    tp = _hints(cls)[name]
    if dataclasses.is_dataclass(tp):  # built key by key, so each key keeps its line
        if not isinstance(value, YamlMap):
            errors.add(where, f"expected a mapping, got {show(value)}")
            return INVALID
        return build_obj(tp, value, errors)
    return checked(tp, value, where, errors)


def checked(tp, value: Any, where: Where, errors: Errors, strict: bool | None = None) -> Any:
    """`value` checked and coerced by pydantic against the annotation `tp`, or INVALID; each
    of pydantic's errors is reported where its part of `value` was written. `strict`: no
    conversions but int -> float, for a bare annotation (the schema's own types are strict)."""
    try:
        return _adapter(tp).validate_python(value, strict=strict)
    except ValidationError as exc:
        for error in exc.errors():
            at, node, annotation = _locate(error["loc"], value, tp, where)
            errors.add(at, _message(error, node, annotation))
        return INVALID


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


@functools.cache  # one adapter per annotation, built on first use (building costs more than validating)
def _adapter(tp) -> TypeAdapter:
    return TypeAdapter(tp)


def _locate(loc: tuple, value: Any, tp, where: Where) -> tuple[Where, Any, Any]:
    """Follow pydantic's error location into the YAML value and the annotation: where it was
    written, the value there and its type. Stops at a union, whose members' errors are one
    problem ('expected a number or a list'), and at a list too short for a fixed tuple."""
    for i, part in enumerate(loc):
        tp = _strip(tp)
        if typing.get_origin(tp) is dict and isinstance(value, YamlMap) and part in value:
            key_error = loc[i + 1:i + 2] == ("[key]",)
            where, value = value.at(part), (part if key_error else value[part])
            tp = typing.get_args(tp)[0 if key_error else 1]
            if key_error:
                break
            continue
        if _is_union(tp) or not (isinstance(part, int) and isinstance(value, list) and part < len(value)):
            break
        where = value.at(part) if isinstance(value, YamlSeq) else where
        value = value[part]
        args = typing.get_args(tp)
        tp = args[0] if len(args) == 2 and args[1] is Ellipsis else args[part]
    return where, value, _strip(tp)


def _message(error: dict, value: Any, tp) -> str:
    """Pydantic's error in the suite's words: the expected kind of value and the value given."""
    kind = error["type"]
    if kind == "suite_check":  # a schema constraint: its message is already the suite's
        return error["msg"]
    if kind == "finite_number":
        return f"expected a finite number, got {value!r}"
    if kind == "literal_error":
        return f"unknown value {show(value)}" + hint(value, typing.get_args(tp))
    if typing.get_origin(tp) is tuple and isinstance(value, list) and Ellipsis not in typing.get_args(tp):
        return f"expected a list of {len(typing.get_args(tp))} items, got {len(value)}"
    return f"expected {_type_name(tp)}, got {show(value)}"


def _strip(tp):
    """The type without its Annotated checks, and without None when one type remains."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if _is_union(tp):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return _strip(options[0])
    return tp


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _type_name(tp) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    tp = _strip(tp)
    if tp in names:
        return names[tp]
    if _is_union(tp):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (list, tuple):
        return "a list"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return "a mapping"
