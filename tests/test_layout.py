"""The package's layout: no import cycles, and a light ``import specblur``."""
import ast
import subprocess
import sys
from pathlib import Path

import specblur

PACKAGE = Path(specblur.__file__).resolve().parent


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path, name):
    """Every specblur module that ``path`` imports, at any depth of its code."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("specblur"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("specblur"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
    return found


def import_graph():
    """``{module: modules it imports}`` over the specblur package's own modules."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: sorted(m for m in _imports(path, name) if m in files and m != name)
            for name, path in files.items()}


def test_the_import_graph_sees_imports():
    graph = import_graph()
    assert "specblur.fitting" in graph["specblur.sweep.runner"]
    assert "specblur.kernels._numba" in graph["specblur.kernels.cpu"]


def test_no_import_cycles():
    graph = import_graph()
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph[node]:
            # a package's __init__ is imported before any of its submodules: not a cycle
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_import_specblur_loads_nothing_heavy():
    code = ("import sys, specblur; "
            "print(' '.join(m for m in ('numba', 'pandas', 'scipy', 'matplotlib', 'torch', "
            "'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_lazy_names_resolve_to_functions():
    import specblur.deletion  # noqa: F401 - a submodule import must not shadow a function
    import specblur.fitting  # noqa: F401
    import specblur.segmentation  # noqa: F401

    assert callable(specblur.fit) and specblur.fit.__module__ == "specblur.fitting"
    assert callable(specblur.segments)
    assert specblur.load.__module__ == "specblur.sweep.results"
    assert callable(specblur.faithfulness) and callable(specblur.faithfulness_summary)
