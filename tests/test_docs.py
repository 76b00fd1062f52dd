"""The documentation site: every library module is in the API reference, and everything the reference shows
has a docstring (module, public classes, functions, methods and properties)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src"
REFERENCE = ROOT / "docs" / "reference"
DIRECTIVE = re.compile(r"^:::\s+(routerank[\w.]*)\s*$", re.MULTILINE)
OUTSIDE_REFERENCE = ("routerank.cli",)  # the CLI is documented by its --help and the guide pages


def library_modules() -> list[str]:
    """Every importable module of the package, by dotted name."""
    names = []
    for path in sorted((SOURCE / "routerank").rglob("*.py")):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        if "bundle" in parts:
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def reference_modules() -> list[str]:
    """The modules the reference pages render, in page order."""
    found = []
    for page in sorted(REFERENCE.rglob("*.md")):
        found.extend(DIRECTIVE.findall(page.read_text(encoding="utf-8")))
    return found


def module_path(name: str) -> Path:
    """The source file of a dotted module name."""
    base = SOURCE.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _is_setter(node: ast.AST) -> bool:
    return any(isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter") for d in node.decorator_list)


def undocumented(name: str) -> list[str]:
    """`module:qualified.name` of each public definition of a module without a docstring (the module itself too)."""
    tree = ast.parse(module_path(name).read_text(encoding="utf-8"))
    missing = [] if ast.get_docstring(tree) else [f"{name}:<module>"]
    stack: list[tuple[list[ast.stmt], str]] = [(tree.body, "")]
    while stack:
        body, prefix = stack.pop()
        for node in body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if node.name.startswith("_") or _is_setter(node):
                continue
            if ast.get_docstring(node) is None:
                missing.append(f"{name}:{prefix}{node.name}")
            if isinstance(node, ast.ClassDef):
                stack.append((node.body, f"{prefix}{node.name}."))
    return missing


def test_every_library_module_is_in_the_reference():
    shown = set(reference_modules())
    absent = [m for m in library_modules() if m not in shown and not m.startswith(OUTSIDE_REFERENCE)]
    assert not absent, f"modules missing from docs/reference: {absent}"
    unknown = sorted(shown - set(library_modules()))
    assert not unknown, f"docs/reference names modules that do not exist: {unknown}"


def test_everything_the_reference_shows_has_a_docstring():
    missing = [item for module in reference_modules() for item in undocumented(module)]
    assert not missing, f"{len(missing)} public definitions without a docstring, e.g. {missing[:20]}"


if __name__ == "__main__":  # python tests/test_docs.py [module-prefix ...]: list what lacks a docstring
    prefixes = tuple(sys.argv[1:]) or ("routerank",)
    names = [m for m in library_modules() if m.startswith(prefixes) and not m.startswith(OUTSIDE_REFERENCE)]
    items = [item for m in names for item in undocumented(m)]
    print("\n".join(items))
    print(f"{len(items)} without a docstring in {len(names)} modules")
