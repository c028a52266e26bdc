"""The package's layout as docs/architecture.md draws it, checked on the code itself.

The stage folders import one way (cli → train/predict/export/synthetic → evaluate → qupath/model
→ wsi → annotations → the base modules), no module imports itself back through others, modules and
functions stay short, and the inference seams are typed. Imports are read with ``ast`` (nothing
is run); a name imported from a stage package (``from qupath_camseg.wsi import open_slide``) is
followed to the module that defines it, through the package's lazy export map.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "qupath_camseg"
BASE = {"errors", "_io", "_runtime", "_dist", "_compat", "__init__", "__main__"}
#: stage folder → the stage folders it may import (every folder may import the base modules)
ALLOWED: dict[str, set[str]] = {
    "annotations": set(),
    "wsi": {"annotations"},
    "model": {"annotations", "wsi"},
    "qupath": {"annotations", "wsi"},
    "evaluate": {"annotations", "qupath", "wsi"},
    "export": {"annotations", "model", "wsi"},
    "synthetic": {"annotations", "qupath", "wsi"},
    "predict": {"annotations", "model", "qupath", "wsi"},
    "train": {"annotations", "evaluate", "model", "qupath", "wsi"},
}
STAGES = set(ALLOWED)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
#: in-function imports of the package's own modules that are there on purpose
LAZY_OK = {
    "cli": "qcamseg --help must not import torch, tiffslide or paquo",
}


def _modules() -> dict[str, Path]:
    """``"predict.inference"`` → file, ``"errors"`` → file, ``"predict"`` → its __init__."""
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _lazy_map(package: str) -> dict[str, str]:
    """Exported name → defining module, from a stage package's ``lazy_loader.attach`` call."""
    tree = ast.parse(MODULES[package].read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "submod_attrs" and isinstance(node.value, ast.Dict):
            for key, names in zip(node.value.keys, node.value.values):
                for elt in getattr(names, "elts", []):
                    out[elt.value] = f"{package}.{key.value}"
    return out


LAZY = {pkg: _lazy_map(pkg) for pkg in STAGES if pkg in MODULES}


def _targets(node: ast.AST, here: str) -> list[str]:
    """The package modules an import statement loads (``""`` when none)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
        return [n.removeprefix("qupath_camseg.") for n in names if n.startswith("qupath_camseg.")]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = here.split(".")[: -node.level] if here.count(".") >= node.level - 1 else []
        module = ".".join(base + ([node.module] if node.module else []))
    elif node.module and (node.module == "qupath_camseg" or node.module.startswith("qupath_camseg.")):
        module = node.module.removeprefix("qupath_camseg").lstrip(".")
    else:
        return []
    out = []
    for alias in node.names:
        full = f"{module}.{alias.name}" if module else alias.name
        if full in MODULES:
            out.append(full)
        elif module in LAZY and alias.name in LAZY[module]:
            out.append(LAZY[module][alias.name])
        elif module:
            out.append(module)
    return [t for t in out if t != "__init__"]


def _imports(name: str) -> list[tuple[str, int, bool]]:
    """``(target module, line, inside a function)`` for every package import of module ``name``."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, in_function, True)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)) and not type_checking:
                found.extend((t, child.lineno, in_function) for t in _targets(child, name))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)), type_checking)

    visit(tree, False, False)
    return found


def _folder(module: str) -> str:
    return module.split(".")[0]


def test_stage_folders_import_only_downwards() -> None:
    bad = []
    for name in MODULES:
        src = _folder(name)
        for target, line, _ in _imports(name):
            dst = _folder(target)
            if dst == src or dst in BASE:
                continue
            if src == "__main__":  # `python -m qupath_camseg` is the command line
                continue
            if src in BASE:
                bad.append(f"{name}:{line} -> {target} (a base module imports a stage)")
            elif src in STAGES and dst not in ALLOWED[src]:
                bad.append(f"{name}:{line} -> {target} ({src}/ may import only {sorted(ALLOWED[src]) or 'the base modules'})")
    assert not bad, "imports against docs/architecture.md:\n" + "\n".join(bad)


def test_no_import_cycle() -> None:
    graph = {name: {t for t, _, _ in _imports(name) if t in MODULES and t != name} for name in MODULES}
    # a package imports its own modules lazily: the edge package -> submodule is no cycle
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_sibling_imports_sit_at_module_top() -> None:
    lazy = [f"{name}:{line} imports {target} inside a function"
            for name in MODULES if _folder(name) not in LAZY_OK
            for target, line, inside in _imports(name) if inside]
    assert not lazy, "\n".join(lazy)


def test_modules_and_functions_stay_short() -> None:
    long = []
    for name, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        n = text.count("\n")
        if n > MAX_MODULE_LINES:
            long.append(f"{name}: {n} lines (> {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length} lines (> {MAX_FUNCTION_LINES})")
    assert not long, "\n".join(long)


@pytest.mark.parametrize("module", ["predict.inference", "predict.blending", "predict.tile_reader"])
def test_inference_seams_are_typed(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    untyped = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("__"):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            for arg in args:
                if arg.arg in ("self", "cls"):
                    continue
                if arg.annotation is None or "Any" in ast.unparse(arg.annotation):
                    untyped.append(f"{node.name}({arg.arg})")
            if node.returns is None or "Any" in ast.unparse(node.returns):
                untyped.append(f"{node.name} -> ...")
    assert not untyped, f"{module}: untyped or Any at " + ", ".join(untyped)


def test_every_stage_exports_what_its_modules_define() -> None:
    missing = []
    for pkg, names in LAZY.items():
        for name, module in names.items():
            tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
            defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            defined |= {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                        for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
            if name not in defined:
                missing.append(f"{pkg}.{name} -> {module} (not defined there)")
    assert not missing, "\n".join(missing)
