"""The package's shape, read from its source with Python's `ast`: no import cycles, no module
over 500 lines, and nothing under `lib/` importing `defs/` or `emulators/` (production code must
not start an emulator or depend on Dagster wiring). Imports inside functions count too: hiding an
import in a function does not make a cycle go away."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "sap_ometria_assets"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every package module `name` imports (a `from a import b` naming submodule b counts as a.b)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            # the longest known module prefix: `a.b.func` is module a.b
            parts = target.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != name:
                out.add(".".join(parts))
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {name: _imports(name, path, known) for name, path in mods.items()}
    # Importing a.b.c runs a/__init__ and a/b/__init__ first, but that is not an import of
    # them by this module's code, so parents are not added as edges.
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_structure_reader_sees_the_package() -> None:
    graph = _graph()
    assert f"{PACKAGE}.definitions" in graph
    assert any(name.startswith(f"{PACKAGE}.lib.") for name in graph)
    # the reader resolves imports: definitions.py imports something of the package
    assert graph[f"{PACKAGE}.definitions"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_is_small_enough_to_read(name: str) -> None:
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES})"


def test_lib_imports_neither_defs_nor_emulators() -> None:
    bad = sorted(
        f"{mod} -> {dep}"
        for mod, deps in _graph().items()
        if mod.startswith(f"{PACKAGE}.lib")
        for dep in deps
        if dep.startswith((f"{PACKAGE}.defs", f"{PACKAGE}.emulators"))
    )
    assert bad == []


def _readme_layout() -> str:
    text = (ROOT.parent / "README.md").read_text()
    start = text.index("## Layout")
    end = text.find("\n## ", start + 1)
    return text[start:] if end == -1 else text[start:end]


def test_readme_layout_names_every_folder_and_module() -> None:
    """The README's Layout section is the map a new developer reads: a module it does not name is
    a room nobody was told about."""
    layout = _readme_layout()
    words = set(layout.replace("/", " / ").split())
    missing = []
    for name, path in _modules().items():
        if path.name == "__init__.py":
            if f"{path.parent.name}/" not in layout:
                missing.append(f"{path.parent.relative_to(ROOT.parent)}/")
            continue
        if path.name not in words and path.stem not in words:
            missing.append(str(path.relative_to(ROOT.parent)))
    assert missing == [], f"README.md's Layout section does not name {missing}"
