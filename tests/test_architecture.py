"""Imports run one way: down the layers of docs/architecture.md, in the order data flows.

Every module under hardwire/ is read with `ast` (its import statements, function-local ones
included, none executed) and each import is checked against LAYERS: a package may import its own
layer and the layers below it, never one above, and no two packages may import each other
through any chain. docs/architecture.md says why each package sits where it does.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hardwire"

# Bottom to top. A name is a module or package directly under hardwire/ ("hardwire" is the
# package's own __init__, the public facade: load, open_die, engine).
LAYERS = (
    ("errors", "atomic", "progress", "arithmetic",    # the base: nothing from hardwire but errors
     "numba_cache",                                    # (numba's cache stamps; imported first by the facade)
     "jsonfile", "tomlfile", "console"),
    ("model",),                                        # checkpoints, spec, float reference, text
    ("formats", "die", "adapters"),                    # the frozen artifact, its number formats, its patches
    ("freeze",),                                       # checkpoint -> die, and the die's tables
    ("backend",),                                      # the engine interface
    ("datapath",),                                     # the token step as typed blocks
    ("golden", "chip"),                                # its consumers: integer model, estimate
    ("rtl",),                                          # its consumer: Verilog (checked against golden)
    ("runtime",),                                      # picks a backend; run, serve
    ("measure", "ttc"),                                # measurements that run the backends
    ("explore", "patch"),                              # later stages, above everything they will use
    ("report",),                                       # one page of what every stage above computes
    ("cli", "options", "hardwire"),                    # the command, its option checks, the facade
)
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every Python module of the package (hardwire/data holds bundled models and text, no code)."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] != "data"}


def imports(name: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported hardwire module) for every import statement in the module."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:                      # relative: from the module's own package upwards
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:            # `from hardwire import arithmetic` imports a module
                submodule = f"{source}.{alias.name}"
                found.append((node.lineno, submodule if submodule in known else source))
    return [(line, target) for line, target in found if target == "hardwire" or target.startswith("hardwire.")]


def unit(module: str) -> str:
    """The layer unit of a module: the name directly under hardwire/, or "hardwire" itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "hardwire"


def package_edges() -> dict[tuple[str, str], list[str]]:
    """{(importer, imported): ["file:line imports module", ...]} between different units."""
    found = modules()
    known = set(found)
    edges: dict[tuple[str, str], list[str]] = {}
    for name, path in found.items():
        for line, target in imports(name, path, known):
            if unit(name) != unit(target):
                edges.setdefault((unit(name), unit(target)), []).append(
                    f"{path.relative_to(ROOT)}:{line} imports {target}")
    return edges


def test_every_module_under_hardwire_has_a_layer():
    units = {unit(name) for name in modules()}
    assert not units - set(LAYER_OF), (f"place {sorted(units - set(LAYER_OF))} in LAYERS here and explain it in "
                                       f"docs/architecture.md")


def test_no_package_imports_a_layer_above_its_own():
    upward = [f"{where}: {source} (layer {LAYER_OF[source]}) may not import {target} (layer {LAYER_OF[target]})"
              for (source, target), lines in sorted(package_edges().items())
              if LAYER_OF.get(source, 0) < LAYER_OF.get(target, 0) for where in lines]
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_no_two_packages_import_each_other():
    edges = package_edges()
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo += graph.get(node, ())
        return False

    on_cycles = sorted(f"{source} -> {target} ({edges[source, target][0]})"
                       for source, target in edges if reaches(target, source))
    assert not on_cycles, "imports on a cycle between packages:\n" + "\n".join(on_cycles)


def test_the_checker_sees_function_local_and_relative_imports(tmp_path):
    """The walker itself: an import inside a function and a relative import both count."""
    module = tmp_path / "hardwire" / "golden" / "example.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from hardwire.runtime.engine import make_engine\n"
                      "from . import forward\nfrom ..rtl import top\n")
    found = imports("hardwire.golden.example", module, {"hardwire.golden.forward", "hardwire.rtl.top"})
    assert sorted(found) == [(2, "hardwire.runtime.engine"), (3, "hardwire.golden.forward"), (4, "hardwire.rtl.top")]
