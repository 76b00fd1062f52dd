"""The package's import structure: every module imports on its own, `import routerank` loads no torch, every
import of routerank's own modules sits at the top of its module, no two modules import each other, and imports
flow downward through the layers."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import routerank
from routerank.route import RoutedScorer

PACKAGE = Path(routerank.__file__).parent
HEAVY = ("torch", "transformers", "faiss", "sentence_transformers", "peft", "trl", "ray", "spacy", "matplotlib")
HEAVY += ("fastapi", "uvicorn")  # the server's extras load when it starts, not with the CLI


def _fresh(code: str) -> str:
    """Run `code` in a fresh interpreter and return its stdout; its stderr is the failure message."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text(), str(p))) for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    """The routerank modules an import statement names: `from a.b import c` is a.b.c when c is a module."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "routerank"]
    if node.level:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    if source.split(".")[0] != "routerank":
        return []
    return [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]


def _is_own(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return bool(node.level) or (node.module or "").split(".")[0] == "routerank"
    return isinstance(node, ast.Import) and any(a.name.split(".")[0] == "routerank" for a in node.names)


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: its body, and the branches of top-level if/try blocks,
    except `if TYPE_CHECKING:` ones."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(statements: list[ast.stmt]) -> None:
        for statement in statements:
            if isinstance(statement, ast.Import | ast.ImportFrom):
                found.append(statement)
            elif isinstance(statement, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(statement.test):
                    visit(statement.body)
                    visit(statement.orelse)
            elif isinstance(statement, ast.Try):
                visit(statement.body)
                visit(statement.orelse)
                visit(statement.finalbody)
                for handler in statement.handlers:
                    visit(handler.body)

    visit(tree.body)
    return found


def _import_cycles() -> list[list[str]]:
    """Strongly connected components (of more than one module) of the module-level import graph.

    `import a.b.c` also runs a/__init__ and a/b/__init__, so an edge goes to the named module and to each package
    above it, except the packages that hold the importer (those are being imported already)."""
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = defaultdict(set)
    for name, (path, tree) in modules.items():
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        for node in _module_level_imports(tree):
            for target in _imported(name, path, node, known):
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    step = ".".join(parts[:i])
                    if step in known and step != name and (step == target or step not in own_packages):
                        graph[name].add(step)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for name in sorted(modules):
        if name not in index:
            connect(name)
    return components


def test_import_loads_no_heavy_dependencies():
    code = (
        "import sys, routerank\n"
        "routerank.load_dataset, routerank.evaluate, routerank.build_pipeline, routerank.Run, routerank.Reranker\n"
        "import routerank.pipeline, routerank.retrieve, routerank.cli, routerank.serve, routerank.r2r, routerank.r3ag\n"
        "import routerank.api, routerank.route\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    assert _fresh(code).strip() == "[]"


def test_every_module_imports_in_a_fresh_interpreter():
    code = (
        "import importlib, json, pkgutil, traceback, routerank\n"
        "failed = {}\n"
        "for info in pkgutil.walk_packages(routerank.__path__, 'routerank.'):\n"
        "    if info.name.rpartition('.')[2] == '__main__':\n"
        "        continue\n"
        "    try:\n"
        "        importlib.import_module(info.name)\n"
        "    except Exception:\n"
        "        failed[info.name] = traceback.format_exc(limit=3)\n"
        "print(json.dumps(failed))\n"
    )
    failed = json.loads(_fresh(code))
    assert not failed, "\n".join(f"{name}:\n{error}" for name, error in failed.items())


def test_no_function_imports_routeranks_own_modules():
    """Every import of routerank's own modules sits at the top of its module, where the import graph shows it.
    (A local import of a heavy third-party library, e.g. torch, is fine; that keeps `import routerank` light.)"""
    local = []
    for path, tree in _modules().values():
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                local += [
                    f"{path.relative_to(PACKAGE.parent)}:{node.lineno} in {function.name}()"
                    for node in ast.walk(function)
                    if _is_own(node)
                ]
    assert not local, "function-local imports of routerank modules:\n" + "\n".join(sorted(set(local)))


def test_no_import_cycles_among_routerank_modules():
    assert _import_cycles() == []


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    package = tmp_path / "routerank"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from routerank.sub.b import x\n")
    (package / "sub" / "__init__.py").write_text("from routerank.sub import b\n")
    (package / "sub" / "b.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    pass\nfrom . import c\nx = 1\n")
    (package / "sub" / "c.py").write_text("import typing\n\nif typing.TYPE_CHECKING:\n    import routerank.a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert _import_cycles() == []
    (package / "sub" / "c.py").write_text("def f():\n    return 1\n\nfrom routerank.a import x\n")
    assert _import_cycles() == [["routerank.a", "routerank.sub", "routerank.sub.b", "routerank.sub.c"]]


def test_unknown_attribute_is_an_attribute_error():
    try:
        routerank.nonexistent  # noqa: B018
    except AttributeError as exc:
        assert "nonexistent" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_all_lists_exactly_the_lazy_exports():
    assert sorted(routerank.__all__) == sorted(routerank._EXPORTS)
    assert all(hasattr(routerank, name) for name in ("Reranker", "load_dataset", "build_pipeline"))


def test_the_r2r_reranker_is_the_routed_scorer_and_the_api_wrapper_is_not():
    from routerank.api import Reranker
    from routerank.r2r.reranker import R2RReranker

    assert {"route", "score_pairs", "score_kind"} <= set(vars(R2RReranker))
    assert not isinstance(Reranker.__new__(Reranker), RoutedScorer)  # it wraps a routed scorer, has no router


def test_the_r3ag_network_class_loads_torch_on_first_use_and_keeps_its_name():
    pytest.importorskip("torch")
    code = (
        "import sys, routerank.r3ag.router as router\n"
        "print('torch' in sys.modules)\n"
        "cls = router.R3AGNet\n"
        "print('torch' in sys.modules, cls.__module__, cls.__qualname__, cls is router.net_class())\n"
    )
    assert _fresh(code).split("\n")[:2] == ["False", "True routerank.r3ag.router R3AGNet True"]


# The layers of the library, bottom (0) to top: a module may import only modules of its own layer or below. The
# longest matching prefix names a module's layer. `routerank` itself (lazy exports and the version) sits at the
# bottom; R2R and R3AG are vertical slices, so their trainers and label building sit above `train`/`pipeline`.
LAYERS = {
    "routerank": 0,
    "routerank.errors": 0,
    "routerank.fsutil": 0,
    "routerank.route": 0,
    "routerank.stages": 1,
    "routerank.data": 1,
    "routerank.models": 1,
    "routerank.scale": 1,
    "routerank.evaluate": 2,
    "routerank.retrieve": 3,
    "routerank.generate": 4,
    "routerank.rerank": 5,
    "routerank.api": 6,
    "routerank.starter": 6,
    "routerank.r2r": 6,
    "routerank.r3ag": 6,
    "routerank.pipeline": 7,
    "routerank.r3ag.labelling": 8,
    "routerank.train": 8,
    "routerank.understand": 8,
    "routerank.r2r.trainer": 9,
    "routerank.r3ag.trainer": 9,
    "routerank.tune": 9,
    "routerank.serve": 9,
    "routerank.integrations": 9,
    "routerank.cli": 10,
}


def _layer(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _upward_imports() -> list[str]:
    modules = _modules()
    known = set(modules)
    return [
        f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
        for name, (path, tree) in modules.items()
        for node in _module_level_imports(tree)
        for target in _imported(name, path, node, known)
        if _layer(target) > _layer(name)
    ]


def test_imports_flow_downward_through_the_layers():
    assert _upward_imports() == []


def test_the_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    package = tmp_path / "routerank"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")
    (package / "pipeline.py").write_text("from routerank.data import types\n")
    (package / "data" / "types.py").write_text("def f():\n    return 1\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert _upward_imports() == []
    (package / "data" / "types.py").write_text("from routerank.pipeline import build\n")
    assert _upward_imports() == ["routerank.data.types (layer 1) imports routerank.pipeline (layer 7)"]
