"""The layering of docs/architecture.md, checked on the source: every import (at the top of a file
or inside a function) goes down the stack or sideways within a layer, never up.

    demo                     runs the other commands through the CLI
    cli, commands            the command line
    flows                    build, report, runtime (board), api (the Python API), dse (exploration)
    sim                      cycle-model report, RTL runner, cocotb bench, synthetic models
    engines                  the registry (loads hw/<engine>/ by name)
    algo | hw                PyTorch compression | Amaranth hardware (neither imports the other)
    reference                the NumPy golden reference
    core                     spec, Deployment, file format, tiling, integer math, safe I/O, errors

The core imports no torch, Amaranth or cocotb; hw imports no torch; algo imports no Amaranth.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"terwin": "terwin", "algo": "terwin.algo", "hw": "terwin.hw", "sim": "terwin.sim"}

# module (or package prefix) -> layer; the longest matching prefix wins
LAYERS = {
    "terwin": 0,
    "terwin.sim.reference": 1,
    "terwin.algo": 2, "terwin.hw": 2,
    "terwin.engines": 3,
    "terwin.sim": 4, "terwin.synthetic": 4,
    "terwin.build": 5, "terwin.report": 5, "terwin.runtime": 5, "terwin.api": 5, "terwin.dse": 5,
    "terwin.commands": 6,
    "terwin.cli": 7, "terwin.__main__": 7,
    "terwin.commands.demo": 8,  # drives the other commands through the CLI's entry point
}
SIBLINGS_APART = ("terwin.algo", "terwin.hw")
# The package's __init__ forwards the API names (terwin.compress, ...) to terwin.api inside its
# module-level __getattr__, on first use: `import terwin` loads no flow and no torch
# (test_import_terwin_loads_no_torch). That one edge up the stack is the facade, and allowed.
LAZY_FACADE = {"terwin": ("terwin.api",)}
FORBIDDEN_THIRD_PARTY = {
    0: ("torch", "amaranth", "amaranth_boards", "cocotb", "cocotb_tools", "matplotlib", "sklearn"),
    1: ("torch", "amaranth", "cocotb"),
    2: (),
}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def layer_of(module: str) -> tuple[int, str] | None:
    best = None
    for prefix, layer in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
            best = (layer, prefix)
    return best


def imports_of(name: str, path: Path, known) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            submodules = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known]
            if len(submodules) < len(node.names):  # a name defined in `module` itself
                found.append((module, node.lineno))
            found += [(sub, node.lineno) for sub in submodules]
    return found


def violations() -> list[str]:
    known = modules()
    bad = []
    for name, path in sorted(known.items()):
        mine = layer_of(name)
        if name in ("terwin",):  # the package's __init__ re-exports core names only
            mine = (0, "terwin")
        for target, line in imports_of(name, path, known):
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            top = target.split(".")[0]
            if top != "terwin":
                if top in FORBIDDEN_THIRD_PARTY.get(mine[0], ()):
                    bad.append(f"{where}: layer '{mine[1]}' must not use {top}")
                if mine[1] == "terwin.hw" and top == "torch" or mine[1] == "terwin.algo" and top == "amaranth":
                    bad.append(f"{where}: {mine[1]} must not use {top}")
                continue
            theirs = layer_of(target)
            if theirs is None or target == "terwin" or target in LAZY_FACADE.get(name, ()):
                continue
            if theirs[0] > mine[0]:
                bad.append(f"{where}: '{mine[1]}' (layer {mine[0]}) reaches up to '{theirs[1]}' (layer {theirs[0]})")
            elif {mine[1], theirs[1]} == set(SIBLINGS_APART):
                bad.append(f"{where}: {mine[1]} and {theirs[1]} are independent")
    return bad


def test_every_module_has_a_layer():
    assert all(layer_of(name) for name in modules())


def test_imports_never_reach_up():
    assert violations() == []


def test_the_walk_sees_imports_inside_functions(tmp_path):
    """The check itself: an import inside a function counts like one at the top."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from terwin.cli import main\n    from . import build\n")
    assert imports_of("terwin.spec", path, {"terwin.build"}) == [("terwin.cli", 2), ("terwin.build", 3)]


def test_import_terwin_loads_no_torch():
    """The API's names resolve lazily: importing the package (and using the core) loads no torch,
    Amaranth or flow; the first API name loads the API."""
    code = ("import sys, terwin; terwin.Deployment; terwin.load_spec('pe8x8'); "
            "bad = [m for m in ('torch', 'amaranth', 'terwin.api', 'terwin.algo.graph') if m in sys.modules]; "
            "assert not bad, bad; f = terwin.compress; import terwin.api; assert f is terwin.api.compress; "
            "assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
