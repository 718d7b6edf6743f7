"""The layering of the cmat_jax package, and no import cycle: every import statement of every module
(function-level ones included), read with `ast`, gives an edge. Every module belongs to one layer of LAYERS
and imports only modules of its own layer or of lower ones; agents/ imports nothing of the SQL environment
(envs/sql/), sampling/ nothing of agents/; the graph has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import cmat_jax

PACKAGE_DIR = Path(cmat_jax.__file__).parent

# Bottom to top. A module belongs to the layer of the longest name naming it (a package names its modules);
# it may import modules of its own layer and of lower layers only. models/transformer.py constrains
# activations to the mesh (sharding.py), so sharding and distributed sit below models; rl/loop.py reports
# evaluations with eval_report.py, so that top-level module sits below rl/.
LAYERS = (
    ("foundation", ("cmat_jax.chat", "cmat_jax.fileio", "cmat_jax.interrupts")),
    ("mesh and processes", ("cmat_jax.sharding", "cmat_jax.distributed")),
    ("models", ("cmat_jax.models",)),
    ("checkpoints", ("cmat_jax.checkpoints",)),
    ("data", ("cmat_jax.data",)),
    ("sampling", ("cmat_jax.sampling",)),
    ("settings", ("cmat_jax.settings",)),
    ("environments", ("cmat_jax.envs",)),
    ("task generation and fuzzing", ("cmat_jax.taskgen", "cmat_jax.sqlfuzz")),
    ("agents", ("cmat_jax.agents",)),
    ("episode reports", ("cmat_jax.eval_report",)),
    ("demonstrations", ("cmat_jax.demos",)),
    ("rollout wiring", ("cmat_jax.rollout",)),
    ("training", ("cmat_jax.training",)),
    ("rl", ("cmat_jax.rl",)),
    ("entry points", ("cmat_jax", "cmat_jax.train", "cmat_jax.evaluate", "cmat_jax.eval_config", "cmat_jax.cli")),
)


def _modules(package_dir: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package __init__)."""
    root = package_dir.parent
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def _known_prefix(name: str, modules) -> str | None:
    """The longest prefix of `name` that is a module of the package (`a.b.attr` -> `a.b`)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package modules its import statements name, wherever in the file they stand."""
    modules = _modules(package_dir)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]  # the package relative imports start from
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:  # `from pkg import sub` imports the module pkg.sub when there is one
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {t for t in map(lambda t: _known_prefix(t, modules), targets) if t and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def layer_of(module: str, layers=LAYERS) -> int | None:
    """The index in `layers` of the longest name that names `module`, or None when none does. A name names
    its module and, below the top-level package, the modules inside it; the top-level package names only its
    __init__, so a new subpackage has no layer until LAYERS gives it one."""
    best, best_length = None, -1
    for index, (_, names) in enumerate(layers):
        for name in names:
            inside = "." in name and module.startswith(name + ".")
            if (module == name or inside) and len(name) > best_length:
                best, best_length = index, len(name)
    return best


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """'a (layer) -> b (higher layer)' for every import of a module of a higher layer."""
    found = []
    for module in sorted(graph):
        here = layer_of(module, layers)
        for target in sorted(graph[module]):
            there = layer_of(target, layers)
            if here is not None and there is not None and there > here:
                found.append(f"{module} ({layers[here][0]}) -> {target} ({layers[there][0]})")
    return found


def imports_of(graph: dict[str, set[str]], importer: str, imported: str) -> list[str]:
    """'a -> b' for every module a of package `importer` that imports a module b of package `imported`."""
    def inside(module, package):
        return module == package or module.startswith(package + ".")

    return [f"{module} -> {target}" for module in sorted(graph) if inside(module, importer)
            for target in sorted(graph[module]) if inside(target, imported)]


def test_every_module_has_a_layer():
    graph = import_graph(PACKAGE_DIR)
    assert [module for module in sorted(graph) if layer_of(module) is None] == []


def test_no_module_imports_a_higher_layer():
    assert upward_imports(import_graph(PACKAGE_DIR)) == []


def test_agents_import_nothing_of_the_sql_environment():
    assert imports_of(import_graph(PACKAGE_DIR), "cmat_jax.agents", "cmat_jax.envs.sql") == []


def test_sampling_imports_nothing_of_agents():
    assert imports_of(import_graph(PACKAGE_DIR), "cmat_jax.sampling", "cmat_jax.agents") == []


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGE_DIR)
    assert len(graph) > 50  # every module was read
    # The walk sees module-level, function-level and `from package import module` imports.
    assert "cmat_jax.models.lora" in graph["cmat_jax.models.layers"]
    assert "cmat_jax.data.tfds_source" in graph["cmat_jax.data.sources"]  # inside a function
    assert "cmat_jax.sharding" in graph["cmat_jax.checkpoints.hf"]  # `from cmat_jax import sharding`
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_walk_finds_a_cycle_through_a_function_level_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("from . import b\n")
    (package / "sub" / "b.py").write_text("import os\n\ndef f():\n    from pkg.c import g\n")
    (package / "c.py").write_text("from .sub.a import x\n")
    graph = import_graph(package)
    assert graph["pkg.sub.a"] == {"pkg.sub.b"} and graph["pkg.c"] == {"pkg.sub.a"}
    assert find_cycle(graph) == ["pkg.c", "pkg.sub.a", "pkg.sub.b", "pkg.c"]


def test_the_layer_check_finds_an_upward_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("")
    (package / "low" / "a.py").write_text("def f():\n    from pkg import high\n")
    (package / "high.py").write_text("from pkg.low import a\n")
    layers = (("low", ("pkg.low",)), ("high", ("pkg", "pkg.high")))
    graph = import_graph(package)
    assert layer_of("pkg.low.a", layers) == 0 and layer_of("pkg", layers) == 1
    assert layer_of("pkg.other", layers) is None  # the top-level package names only its __init__
    assert upward_imports(graph, layers) == ["pkg.low.a (low) -> pkg.high (high)"]
    assert imports_of(graph, "pkg.low", "pkg.high") == ["pkg.low.a -> pkg.high"]
