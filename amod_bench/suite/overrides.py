"""`--set KEY.PATH=VALUE` overrides: applied to the parsed YAML before validation, so a bad
value is reported like one in the file, at `--set:<n>` (the n-th override)."""
from __future__ import annotations

from typing import Any

from .problems import Errors, Where
from .yaml_reader import YamlMap, YamlSeq, annotate, join_path, parse_yaml, relocate


def parse_override(text: str) -> tuple[list[str], str]:
    """`a.b.c=value` -> (['a', 'b', 'c'], 'value'). Stages are addressed by index or name."""
    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected KEY.PATH=VALUE")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ValueError(f"--set {text!r}: empty key in {key!r}")
    return parts, value


def apply_override(root: YamlMap, index: int, text: str, errors: Errors) -> None:
    """Set one `KEY.PATH=VALUE` in the parsed tree; problems point at `--set:<index>`."""
    where = (text.split("=", 1)[0], "--set", index)
    try:
        parts, raw = parse_override(text)
    except ValueError as exc:
        errors.add(where, str(exc))
        return
    value_errors = Errors()
    value = parse_yaml(raw, "--set", value_errors) if raw.strip() else None
    if value_errors.problems:
        errors.add(where, f"cannot parse the value {raw!r}: {value_errors.problems[0].message}")
        return
    node: Any = root
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, YamlSeq):  # stages: an index or a stage name
            if part.isdigit() and int(part) < len(node):
                key = int(part)
            else:
                key = next((i for i, item in enumerate(node) if isinstance(item, YamlMap) and item.get("name") == part),
                           None)
            if key is None:
                errors.add(where, f"no list item '{part}' in {node.here[0]} (use an index or a stage name)")
                return
            path = f"{node.here[0]}[{key}]"
        elif isinstance(node, YamlMap):
            key, path = part, join_path(node.here[0], part)
        else:
            errors.add(where, f"cannot set '{part}': {'.'.join(parts[:depth])} is not a mapping")
            return
        if last:
            node[key] = value
            node.where[key] = (path, "--set", index)
            annotate(value, path)
            relocate(value, "--set", index)
            return
        if isinstance(node, YamlMap) and not isinstance(node.get(key), (YamlMap, YamlSeq)):
            child = YamlMap()  # --set defaults.recipe.lr=.. works without a recipe block in the file
            child.here = (path, "--set", index)
            node[key] = child
            node.where[key] = (path, "--set", index)
        node = node[key]


def check_shadowed(root: YamlMap, overrides, errors: Errors) -> None:
    """Refuse a `defaults.*` override that every stage sets for itself: it would change nothing."""
    stages = root.get("stages")
    if not isinstance(stages, list) or not stages or not all(isinstance(st, YamlMap) for st in stages):
        return  # reported by the stage checks
    for index, text in enumerate(overrides, start=1):
        try:
            parts, _ = parse_override(text)
        except ValueError:
            continue  # reported by apply_override
        if parts[0] != "defaults" or len(parts) < 2:
            continue
        value = _lookup(root, parts)
        shadows = [_shadowing(st, parts[1:], value) for st in stages]
        if all(shadows):
            names = [str(st.get("name", f"stages[{i}]")) for i, st in enumerate(stages)]
            sub = ".".join(parts[1:])
            where = ", ".join(f"{name} ({file}:{line})" for name, (_, file, line) in zip(names, shadows))
            errors.add((".".join(parts), "--set", index),
                       f"changes nothing: every stage sets {sub} itself ({where}) and a stage's value wins "
                       f"over defaults; set it per stage instead, e.g. --set stages.{names[0]}.{sub}=...")


def _lookup(node: Any, parts: list[str]) -> Any:
    for part in parts:
        node = node.get(part) if isinstance(node, YamlMap) else None
    return node


def _shadowing(stage: YamlMap, parts: list[str], value: Any) -> Where | None:
    """Where `stage` replaces every part of defaults.<parts> = value (mappings merge key by key), or None."""
    node: Any = stage
    for part in parts[:-1]:
        if not isinstance(node, YamlMap) or part not in node:
            return None
        if not isinstance(node[part], YamlMap):  # a non-mapping replaces the whole defaults block
            return node.at(part)
        node = node[part]
    if not isinstance(node, YamlMap) or parts[-1] not in node:
        return None
    own = node[parts[-1]]
    if isinstance(value, YamlMap) and isinstance(own, YamlMap):  # merged: shadowed only if each key is
        if not all(_shadowing(own, [key], item) for key, item in value.items()):
            return None
    return node.at(parts[-1])
