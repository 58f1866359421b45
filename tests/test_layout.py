"""Repository-wide layout rules, checked from the source (ast; nothing is imported):

(a) no module in wbc_edge/ (vendored code aside) over 400 lines: one job per module;
(b) no leading-underscore name imported from, or reached into, another wbc_edge module: a name two modules
    need is public in the module that owns it;
(c) data flows one way, package by package (docs/ARCHITECTURE.md): core -> runtime -> data -> metrics -> model
    -> calibrate -> train -> export -> diagnose | adapt -> bench -> cli; a module never imports one of a later
    package, nor one of a sibling at the same level (function-level imports count too), and no modules import
    each other in a cycle;
(d) a module's `__all__` is true: every name in it exists, and every public function / class the module
    defines is in it.

Runs in the default suite (no marker); it is the finish line of the "one room per job" refactor.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "wbc_edge"
MAX_LINES = 400
EXCLUDED = ("vendor",)  # third-party code kept verbatim

#: The packages in import order, upstream first: a module may import its own package and any earlier one.
#: The runtime sits right above core: it needs nothing else (a Pi installs it alone), and export checks the files
#: it writes through the very code users run them with.  diagnose and adapt are siblings (neither imports the
#: other).  wbc_edge/__init__.py and vendor/ count as core.
LAYERS = {"core": 0, "vendor": 0, "runtime": 1, "data": 2, "metrics": 3, "model": 4, "calibrate": 5, "train": 6,
          "export": 7, "diagnose": 8, "adapt": 8, "bench": 9, "cli": 10}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:  # wbc_edge/__init__.py
        return "core"
    if parts[1] not in LAYERS:
        raise AssertionError(f"{module}: package wbc_edge.{parts[1]} has no place in LAYERS (tests/test_layout.py); "
                             "every module lives in a stage package")
    return parts[1]


@dataclass(frozen=True)
class Source:
    path: Path
    module: str
    package: str  # what a level-1 relative import is relative to

    @property
    def rel(self) -> str:
        return str(self.path.relative_to(REPO))


def sources() -> list[Source]:
    out = []
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(REPO).with_suffix("").parts
        if len(parts) > 1 and parts[1] in EXCLUDED:
            continue
        if parts[-1] == "__init__":
            module = ".".join(parts[:-1])
            package = module
        else:
            module = ".".join(parts)
            package = ".".join(parts[:-1])
        out.append(Source(p, module, package))
    return out


SOURCES = sources()
SOURCE_OF = {s.module: s for s in SOURCES}
MODULES = {s.module for s in SOURCES} | {"wbc_edge.vendor"}


def is_module(name: str) -> bool:
    return name in MODULES or (PKG.parent / Path(*name.split("."))).with_suffix(".py").is_file() or (
        PKG.parent / Path(*name.split(".")) / "__init__.py").is_file()


def resolve(src: Source, node: ast.ImportFrom) -> str | None:
    """The absolute module name of `from X import ...` (None when X is not part of wbc_edge)."""
    if node.level == 0:
        base = node.module or ""
    else:
        pkg = src.package.split(".")
        pkg = pkg[:len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    return base if base == "wbc_edge" or base.startswith("wbc_edge.") else None


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def imports(src: Source, tree: ast.AST):
    """(line, imported wbc_edge module, names taken from it) for every import statement in the file."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "wbc_edge" or a.name.startswith("wbc_edge."):
                    yield node.lineno, a.name, []
        elif isinstance(node, ast.ImportFrom):
            base = resolve(src, node)
            if base is None:
                continue
            plain = []
            for a in node.names:
                sub = f"{base}.{a.name}"
                if is_module(sub):
                    yield node.lineno, sub, []
                else:
                    plain.append(a.name)
            if plain:
                yield node.lineno, base, plain


def module_aliases(src: Source, tree: ast.AST) -> dict[str, str]:
    """Local names bound to a wbc_edge module (`from . import data`, `import wbc_edge.bench as b`)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("wbc_edge"):
                    out[a.asname or a.name.split(".")[0]] = a.name if a.asname else "wbc_edge"
        elif isinstance(node, ast.ImportFrom):
            base = resolve(src, node)
            if base is None:
                continue
            for a in node.names:
                if is_module(f"{base}.{a.name}"):
                    out[a.asname or a.name] = f"{base}.{a.name}"
    return out


def parsed(src: Source) -> ast.AST:
    return ast.parse(src.path.read_text(encoding="utf-8"), filename=str(src.path))


# --------------------------------------------------------------------------------------------------- (a)


def test_no_module_over_400_lines():
    long = {s.rel: n for s in SOURCES
            if (n := len(s.path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines (split them by job): {long}"


# --------------------------------------------------------------------------------------------------- (b)


def test_no_private_name_crosses_a_module_boundary():
    found = []
    for src in SOURCES:
        tree = parsed(src)
        for line, module, names in imports(src, tree):
            for n in names:
                if is_private(n) and module != src.module:
                    found.append(f"{src.rel}:{line}: from {module} import {n}")
            if is_private(module.rsplit(".", 1)[-1]):
                found.append(f"{src.rel}:{line}: imports private module {module}")
        aliases = module_aliases(src, tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and is_private(node.attr)):
                found.append(f"{src.rel}:{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    assert found == [], "private names used across modules (make them public where they are defined):\n" + \
        "\n".join(found)


def test_the_private_name_check_can_fail(tmp_path):
    """The check above sees both forms (an honest test of the test)."""
    src = Source(PKG / "bench" / "fake.py", "wbc_edge.bench.fake", "wbc_edge.bench")
    tree = ast.parse("from ..data.split import _round\nfrom .. import data\ndata._x\n")
    assert [(m, n) for _, m, n in imports(src, tree)] == [("wbc_edge.data.split", ["_round"]),
                                                          ("wbc_edge.data", [])]
    assert module_aliases(src, tree) == {"data": "wbc_edge.data"}


# --------------------------------------------------------------------------------------------------- (c)


def against_the_flow(importer: str, imported: str) -> bool:
    """An import from a later package, or from a sibling at the same level (diagnose <-> adapt)."""
    mine, theirs = layer_of(importer), layer_of(imported)
    return LAYERS[theirs] > LAYERS[mine] or (LAYERS[theirs] == LAYERS[mine] and theirs != mine
                                             and {mine, theirs} != {"core", "vendor"})


def import_graph() -> dict[str, dict[str, int]]:
    """{module: {imported wbc_edge module: first line}}, module-level and function-level imports alike."""
    graph: dict[str, dict[str, int]] = {}
    for src in SOURCES:
        edges = graph.setdefault(src.module, {})
        for line, module, _ in imports(src, parsed(src)):
            if module != src.module:
                edges.setdefault(module, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan).  A package's __init__ importing its own
    modules is not a cycle by itself; a module importing its package's __init__ back would close one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth <= number of modules (~120)
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_data_flows_one_way():
    found = [f"{SOURCE_OF[m].rel}:{line}: {layer_of(m)} module {m} imports {t} ({layer_of(t)})"
             for m, edges in import_graph().items() for t, line in edges.items() if against_the_flow(m, t)]
    assert found == [], "imports against the flow " + " -> ".join(LAYERS) + ":\n" + "\n".join(found)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert found == [], "modules importing each other (directly or round a loop):\n" + \
        "\n".join(" <-> ".join(c) for c in found)


def test_the_flow_and_cycle_checks_can_fail():
    """An honest test of the two tests above."""
    assert against_the_flow("wbc_edge.train.pipeline", "wbc_edge.export.variants")
    assert against_the_flow("wbc_edge.adapt.pipeline", "wbc_edge.diagnose.layers")
    assert not against_the_flow("wbc_edge.export.parity", "wbc_edge.runtime.classifier")
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
    with pytest.raises(AssertionError, match="no place in LAYERS"):
        layer_of("wbc_edge.loose_module")


@pytest.mark.parametrize("module,layer", [
    ("wbc_edge", "core"), ("wbc_edge.core.labels", "core"), ("wbc_edge.runtime.classifier", "runtime"),
    ("wbc_edge.data.scan", "data"), ("wbc_edge.metrics.parity", "metrics"), ("wbc_edge.train", "train"),
    ("wbc_edge.export.pipeline", "export"), ("wbc_edge.bench.crossdomain", "bench"), ("wbc_edge.cli.data_cmd", "cli"),
])
def test_layers_are_assigned_as_documented(module, layer):
    assert layer_of(module) == layer


# --------------------------------------------------------------------------------------------------- (d)


def _top_level_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(every name bound at module level, public functions/classes defined here)."""
    bound: set[str] = set()
    defined: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(node.name)
                if not node.name.startswith("_"):
                    defined.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name):
                            bound.add(n.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    bound.add((a.asname or a.name).split(".")[0])
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for h in getattr(node, "handlers", []):
                    visit(h.body)
                visit(getattr(node, "finalbody", []))

    visit(tree.body)
    return bound, defined


def _declared_all(tree: ast.Module) -> list[str] | str | None:
    """The literal `__all__` list; "computed" when it is built at import time; None without one."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                return list(ast.literal_eval(node.value))
            except ValueError:
                return "computed"
    return None


def test_all_lists_exist_and_are_complete():
    import importlib

    problems = []
    for src in SOURCES:
        tree = parsed(src)
        declared = _declared_all(tree)
        if declared is None:
            continue
        if declared == "computed":  # e.g. a package's lazy re-exports: ask the module itself
            mod = importlib.import_module(src.module)
            problems += [f"{src.rel}: __all__ names {n!r}, which does not exist" for n in mod.__all__
                         if not hasattr(mod, n)]
            continue
        bound, defined = _top_level_names(tree)
        problems += [f"{src.rel}: __all__ names {n!r}, which does not exist" for n in declared if n not in bound]
        problems += [f"{src.rel}: public {n!r} is missing from __all__" for n in sorted(defined - set(declared))]
    assert problems == [], "\n".join(problems)


def test_architecture_doc_names_every_module():
    """docs/ARCHITECTURE.md is the map a newcomer reads: every module of the tree (the CLI's command modules
    aside) is named in it by its package path, so a move or a new module shows up here until the map is redrawn."""
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = [s.module for s in SOURCES if not s.path.name == "__init__.py" and not s.module.startswith("wbc_edge.cli.")
               and s.module.split(".", 1)[1] not in doc]
    assert missing == [], f"modules docs/ARCHITECTURE.md does not name: {missing}"

