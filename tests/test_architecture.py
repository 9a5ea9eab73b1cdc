"""The package graph, enforced: configs <- {simulation, training} <- twins <- serving.

Every module of ours is parsed (``ast``, imports inside functions included) and the rules below are
checked; each failure names the importing module, the line and the import. ``simulation.whatif`` may
drive the twins (it is the what-if shell over them) but never the application (``serving``). The same
layers are written for import-linter in ``.importlinter``; when ``lint-imports`` is installed it runs too.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES: tuple[str, ...] = ("configs", "simulation", "training", "twins", "serving")
OURS: frozenset[str] = frozenset(PACKAGES) | {"protos"}
WHATIF = "simulation.whatif"

# No module may import a project module inside a function (the what-if's exceptions are gone).
FUNCTION_IMPORT_ALLOWED: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted (resolved: ``from a import b`` is ``a.b`` when that is a module)
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = " (inside a function)" if self.in_function else ""
        return f"{self.module} line {self.line}: imports {self.target}{where}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_ours(name: str) -> bool:
    return name.split(".")[0] in OURS


def parse_imports(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(module, alias.name, child.lineno, in_function)
                             for alias in child.names if _is_ours(alias.name))
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(module, path.name == "__init__.py", child)
                if _is_ours(base):
                    for alias in child.names:
                        candidate = f"{base}.{alias.name}"
                        target = candidate if candidate in MODULES else base
                        found.append(Import(module, target, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


IMPORTS: list[Import] = list(dict.fromkeys(imp for module, path in MODULES.items() for imp in parse_imports(module, path)))


def _top(name: str) -> str:
    return name.split(".")[0]


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _violations(source: str, forbidden: tuple[str, ...], exclude: str | None = None) -> list[str]:
    return [str(imp) for imp in IMPORTS
            if _within(imp.module, source) and not (exclude and _within(imp.module, exclude))
            and any(_within(imp.target, f) for f in forbidden)]


def test_the_parser_sees_imports_inside_functions_and_resolves_relative_ones(tmp_path: Path) -> None:
    source = ("from . import twin\nfrom configs.settings import Config\n"
              "def f():\n    import serving.app\n    from ..configs import schema\n")
    path = tmp_path / "fake.py"
    path.write_text(source)
    found = parse_imports("twins.fake", path)
    assert [(i.target, i.in_function) for i in found] == [
        ("twins.twin", False), ("configs.settings", False), ("serving.app", True), ("configs.schema", True)]


def test_every_package_is_parsed() -> None:
    assert {_top(m) for m in MODULES} == set(PACKAGES)
    assert len(IMPORTS) > 100  # sanity: a parser that found nothing would pass every rule below


def test_no_cycles_between_top_level_packages() -> None:
    edges: dict[str, dict[str, Import]] = {}
    for imp in IMPORTS:
        if _top(imp.module) != _top(imp.target):
            edges.setdefault(_top(imp.module), {}).setdefault(_top(imp.target), imp)

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, {}):
                if nxt == start:
                    return path + [start]
                if nxt not in path:
                    stack.append((nxt, path + [nxt]))
        return None

    for package in PACKAGES:
        cycle = cycle_from(package)
        if cycle:
            witnesses = [str(edges[a][b]) for a, b in zip(cycle, cycle[1:], strict=False)]
            pytest.fail(f"package cycle {' -> '.join(cycle)}: " + "; ".join(witnesses))


def test_configs_imports_nothing_of_ours() -> None:
    bad = [str(imp) for imp in IMPORTS if _within(imp.module, "configs") and not _within(imp.target, "configs")]
    assert not bad, "configs is the contract and imports no other package of ours:\n" + "\n".join(bad)


def test_training_never_imports_simulation_twins_or_serving() -> None:
    bad = _violations("training", ("simulation", "twins", "serving", "protos"))
    assert not bad, "training sits below twins and serving, beside simulation:\n" + "\n".join(bad)


def test_simulation_outside_the_what_if_never_imports_training_twins_or_serving() -> None:
    bad = _violations("simulation", ("training", "twins", "serving", "protos"), exclude=WHATIF)
    assert not bad, "simulation sits below twins and serving, beside training:\n" + "\n".join(bad)


def test_the_what_if_never_imports_serving() -> None:
    bad = _violations(WHATIF, ("serving", "protos"))
    assert not bad, "simulation.whatif drives the twins, never the application:\n" + "\n".join(bad)


def _chain_to(start: str, forbidden: tuple[str, ...]) -> list[Import] | None:
    """The import chain from module ``start`` to a forbidden package, through any of our modules, or None."""
    by_module: dict[str, list[Import]] = {}
    for imp in IMPORTS:
        by_module.setdefault(imp.module, []).append(imp)
    seen = {start}
    queue: list[tuple[str, list[Import]]] = [(start, [])]
    while queue:
        module, chain = queue.pop(0)
        for imp in by_module.get(module, []):
            if any(_within(imp.target, f) for f in forbidden):
                return chain + [imp]
            # ``import a.b.c`` also runs ``a`` and ``a.b``: follow every package on the way.
            parts = imp.target.split(".")
            for k in range(1, len(parts) + 1):
                name = ".".join(parts[:k])
                if name in MODULES and name not in seen:
                    seen.add(name)
                    queue.append((name, chain + [imp]))
    return None


def test_twins_never_reach_protos_or_serving_even_through_another_package() -> None:
    bad = []
    for module in MODULES:
        if _within(module, "twins"):
            chain = _chain_to(module, ("serving", "protos"))
            if chain:
                bad.append(" -> ".join(str(imp) for imp in chain))
    assert not bad, "twins must not depend on the application or the wire (inject instead):\n" + "\n".join(bad)


def test_project_imports_are_at_the_top_of_the_file() -> None:
    inside = [imp for imp in IMPORTS if imp.in_function]
    bad = [str(imp) for imp in inside if imp.module not in FUNCTION_IMPORT_ALLOWED]
    assert not bad, ("project modules are imported at the top of the file (only heavy third-party packages such as "
                     "torch, ray, lightgbm, lancedb may be imported inside a function):\n" + "\n".join(bad))
    stale = sorted(FUNCTION_IMPORT_ALLOWED - {imp.module for imp in inside})
    assert not stale, f"no longer needed in FUNCTION_IMPORT_ALLOWED, remove them: {stale}"


def test_import_linter_contracts_hold() -> None:
    """The same layers for import-linter (``.importlinter``), when the tool is installed."""
    lint_imports = shutil.which("lint-imports") or shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint_imports is None:
        pytest.skip("import-linter is not installed")
    assert (ROOT / ".importlinter").exists()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's packages, whatever the venv installed
    done = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
