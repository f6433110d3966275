"""The suite file as YAML that remembers where each value was written.

`parse_yaml` returns `YamlMap` / `YamlSeq` containers whose `at(key)` gives (dotted path,
file, line) for messages. Reading is bounded (MAX_SUITE_BYTES, MAX_DEPTH, MAX_NODES), so
a hostile file ends in a SuiteError instead of a hang."""
from __future__ import annotations

import re
import typing
from typing import Any

import yaml

from .problems import Errors, Problem, SuiteError, Where, show


class YamlMap(dict):
    """A mapping from YAML; `where[key]` = (path, file, line) of the key."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.here: Where = ("(top level)", "", 1)
        self.where: dict[Any, Where] = {}

    def at(self, key) -> Where:
        return self.where.get(key, (join_path(self.here[0], key),) + self.here[1:])


class YamlSeq(list):
    """A sequence from YAML; `where[i]` = (path, file, line) of item i."""

    def __init__(self, *args):
        super().__init__(*args)
        self.here: Where = ("(top level)", "", 1)
        self.where: list[Where] = []

    def at(self, index: int) -> Where:
        return self.where[index] if index < len(self.where) else (f"{self.here[0]}[{index}]",) + self.here[1:]


def where_in(container, index, fallback: Where) -> Where:
    """Where item `index` of `container` was written; `fallback` for a container not read from YAML."""
    return container.at(index) if isinstance(container, (YamlMap, YamlSeq)) else fallback


def join_path(path: str, key) -> str:
    return str(key) if path in ("", "(top level)") else f"{path}.{key}"


# Bounds on what one suite file may make the loader do. An alias is cheap to write and is
# walked once per use (line annotation, merging, validation), so 9 levels of 9 aliases
# (300 bytes) would expand to 9^9 nodes: the budget counts nodes as expanded. The largest
# shipped suite has under 200 expanded nodes and 7 levels of nesting.
MAX_SUITE_BYTES = 1 << 20
MAX_NODES = 100_000  # expanded: an alias counts as a copy of what it refers to
MAX_DEPTH = 64  # well inside Python's recursion limit, which the composer would hit first


class _Loader(yaml.SafeLoader):
    """SafeLoader that records line numbers and reports duplicate keys; `1e-5` is a float.

    Composition is bounded (MAX_DEPTH, MAX_NODES): a node's expanded size is known once
    its children are composed, so an alias bomb is refused before anything walks it."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.depth = 0
        self.sizes: dict[int, int] = {}  # id(node) -> expanded node count (nodes live while composing)

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        alias = self.check_event(yaml.AliasEvent)
        if self.depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if alias:  # the anchored node itself: sized already, unless the alias sits inside it
            if id(node) not in self.sizes:
                raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it", mark)
            return node
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        size = 1 + sum(self.sizes[id(child)] for child in children)
        if size > MAX_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_NODES:,} nodes once its aliases are expanded "
                            "(each use of an alias counts as a copy; is this an alias bomb?)", mark)
        self.sizes[id(node)] = size
        return node


# YAML 1.1 (PyYAML) reads 1e-5 as a string; every suite writes learning rates that way.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> YamlMap:
    loader.flatten_mapping(node)  # merge keys (<<: *anchor)
    out = YamlMap()
    out.here = ("", loader.source, node.start_mark.line + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, typing.Hashable):
            loader.problems.append((out, "?", line, f"a mapping key must be a scalar, got {show(key)}"))
            continue
        if key in out:  # PyYAML keeps the last silently; a suite must not
            loader.problems.append((out, key, line, f"duplicate key '{key}' (first on line {out.where[key][2]})"))
        out[key] = loader.construct_object(value_node, deep=True)
        out.where[key] = ("", loader.source, line)
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> YamlSeq:
    out = YamlSeq(loader.construct_object(item, deep=True) for item in node.value)
    out.here = ("", loader.source, node.start_mark.line + 1)
    out.where = [("", loader.source, item.start_mark.line + 1) for item in node.value]
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def annotate(node: Any, path: str) -> None:
    """Fill in the dotted paths the loader could not know."""
    if isinstance(node, YamlMap):
        node.here = (path,) + node.here[1:]
        for key, value in node.items():
            sub = join_path(path, key)
            node.where[key] = (sub,) + node.where[key][1:]
            annotate(value, sub)
    elif isinstance(node, YamlSeq):
        node.here = (path,) + node.here[1:]
        for i, value in enumerate(node):
            node.where[i] = (f"{path}[{i}]",) + node.where[i][1:]
            annotate(value, f"{path}[{i}]")


def parse_yaml(text: str, source: str, errors: Errors, path: str = "(top level)") -> Any:
    loader = _Loader(text)
    loader.source = source
    loader.problems = []
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(str(s) for s in (exc.context, exc.problem) if s)
        errors.add((path, source, line), f"malformed YAML: {what}")
        return None
    except yaml.YAMLError as exc:
        errors.add((path, source, 1), f"malformed YAML: {exc}")
        return None
    finally:
        loader.dispose()
    annotate(data, path)
    for mapping, key, line, message in loader.problems:
        errors.add((join_path(mapping.here[0], key), source, line), message)
    return data


def merge(base: Any, over: Any) -> Any:
    """Mappings merge key by key (recursively); anything else in `over` replaces."""
    if not (isinstance(base, YamlMap) and isinstance(over, YamlMap)):
        return over
    out = YamlMap(base)
    out.here, out.where = over.here, dict(base.where)
    for key, value in over.items():
        out[key] = merge(base[key], value) if key in base else value
        out.where[key] = over.where[key]
    return out


def plain(value: Any) -> Any:
    """YamlMap/YamlSeq -> plain dict/list (for configs and JSON)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def seq_of(data: YamlMap, key) -> YamlSeq:
    """data[key] (a scalar) as a one-item list written where the scalar was."""
    seq = YamlSeq([data[key]])
    seq.here = data.at(key)
    seq.where = [data.at(key)]
    return seq


def relocate(node: Any, file: str, line: int) -> None:
    """Point every location inside `node` at one place (the `--set` argument it came from)."""
    if isinstance(node, YamlMap):
        node.here = (node.here[0], file, line)
        node.where = {k: (w[0], file, line) for k, w in node.where.items()}
        for v in node.values():
            relocate(v, file, line)
    elif isinstance(node, YamlSeq):
        node.here = (node.here[0], file, line)
        node.where = [(w[0], file, line) for w in node.where]
        for v in node:
            relocate(v, file, line)


def read_text(source: str) -> str:
    """The suite file as text: at most MAX_SUITE_BYTES of UTF-8, or a SuiteError naming it."""
    def refuse(message: str, line: int = 0) -> typing.NoReturn:
        raise SuiteError([Problem(source, line, "(file)", message)]) from None

    try:
        with open(source, "rb") as f:
            raw = f.read(MAX_SUITE_BYTES + 1)
    except OSError as exc:
        refuse(f"cannot read the suite: {exc.strerror or exc}")
    if len(raw) > MAX_SUITE_BYTES:
        refuse(f"larger than {MAX_SUITE_BYTES >> 20} MiB: not a suite file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        refuse(f"not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); a suite is a YAML file",
               raw[:exc.start].count(b"\n") + 1)
