"""The one YAML loader for every configuration file we read (mapping.yaml, checks.yaml).

`yaml.safe_load` builds no objects, but it still expands aliases: a "billion laughs" file of a
few hundred bytes (`a: &a [x, x, ...]`, `b: &b [*a, *a, ...]`, ...) grows into billions of
nodes, and an error message that renders the value hangs the run. Here a file is refused
before it is parsed when it is larger than MAX_BYTES, and while it is composed when it uses
more than MAX_ALIASES aliases or expands to more than MAX_NODES nodes. Errors name the file, the
line and the cause, never the (expanded) value.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1_000_000       # our files are a few KB
MAX_ALIASES = 100           # anchors are allowed, but only a handful of uses
MAX_NODES = 200_000         # nodes after alias expansion


class YamlLimitError(ValueError):
    """The YAML text is too large, uses too many aliases or expands too far."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts aliases and the nodes they stand for while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._sizes: dict[int, int] = {}   # id(node) -> nodes in its expansion
        self._nodes = 0

    def _size(self, node: yaml.Node) -> int:
        key = id(node)
        if key not in self._sizes:
            if isinstance(node, yaml.SequenceNode):
                n = 1 + sum(self._size(c) for c in node.value)
            elif isinstance(node, yaml.MappingNode):
                n = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
            else:
                n = 1
            self._sizes[key] = n
        return self._sizes[key]

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YamlLimitError(
                    f"line {event.start_mark.line + 1}: more than {MAX_ALIASES} YAML aliases "
                    "(`*name`); refusing a file that could expand without bound")
            anchor = event.anchor
            if anchor in self.anchors:
                self._nodes += self._size(self.anchors[anchor])
                if self._nodes > MAX_NODES:
                    raise YamlLimitError(
                        f"line {event.start_mark.line + 1}: the alias *{anchor[:40]} makes the "
                        f"document expand past {MAX_NODES} nodes; refusing it")
        else:
            self._nodes += 1
            if self._nodes > MAX_NODES:
                mark = self.peek_event().start_mark
                raise YamlLimitError(f"line {mark.line + 1}: more than {MAX_NODES} YAML nodes")
        return super().compose_node(parent, index)


def load_yaml_text(text: str) -> Any:
    """Parse YAML text within the limits; raises YamlLimitError or yaml.YAMLError (whose
    message, as `describe_error` renders it, carries no value)."""
    if len(text) > MAX_BYTES:
        raise YamlLimitError(f"{len(text)} characters, more than the {MAX_BYTES} allowed")
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml_file(path: Path) -> Any:
    """Read and parse a YAML file within the limits (the size is checked before reading)."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise YamlLimitError(f"{size} bytes, more than the {MAX_BYTES} allowed")
    return load_yaml_text(path.read_text(encoding="utf-8"))


def describe_error(exc: Exception) -> str:
    """A short cause for a YAML error: line, column and problem, never the document's values."""
    if isinstance(exc, YamlLimitError):
        return str(exc)[:300]
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    return f"{where}{str(problem)[:200]}"


def short_repr(value: Any) -> str:
    """A value for an error message, bounded in depth and length (reprlib never walks a
    whole nested structure)."""
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother = 2, 4, 4, 60, 60
    return r.repr(value)[:200]
