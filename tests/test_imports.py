"""The library's floors: a module imports only from its own floor or the ones below, and no
import circle exists (a circle or an import back up a floor makes two modules one)."""

import ast
import re
from collections import defaultdict
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "workflow_scripts" / "class_embedding"
# Subpackage -> floor; top-level modules (errors, tables, logs, ...) are the ground floor.
FLOORS = {"data": 1, "models": 2, "config": 3, "extraction": 3, "analyses": 4, "figures": 5, "explorer": 6}


def library_imports(root: Path = LIBRARY) -> dict[str, set[str]]:
    """Module -> the library modules (or packages) it imports, function-level imports included."""
    edges = defaultdict(set)
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = parts[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = list(package[: len(package) - node.level + 1])
                if node.module:
                    edges[module].add(".".join([*base, node.module]))
                else:
                    edges[module].update(".".join([*base, alias.name]) for alias in node.names)
    return edges


def floor(module: str) -> int:
    return FLOORS.get(module.split(".")[0], 0)


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    found = []

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(edges.get(module, ())):
            if target in path:
                found.append([*path[path.index(target) :], target])
            elif target not in seen:
                seen.add(target)
                visit(target, [*path, target])

    for start in sorted(edges):
        seen = {start}
        visit(start, [start])
    return found


def test_no_import_runs_back_up_a_floor():
    upward = [f"{m} -> {t}" for m, targets in library_imports().items() for t in targets if floor(t) > floor(m)]
    assert upward == []


def test_no_import_circle():
    assert circles(library_imports()) == []


def test_the_checks_find_what_they_look_for(tmp_path):
    """The same checks on a made-up library with one circle and one import up a floor."""
    for name, text in {
        "models/a.py": "from ..figures import plot\n",
        "figures/plot.py": "def f():\n    from . import other\n",
        "figures/other.py": "from .plot import f\n",
    }.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    edges = library_imports(tmp_path)
    assert [f"{m} -> {t}" for m, ts in edges.items() for t in ts if floor(t) > floor(m)] == ["models.a -> figures"]
    assert ["figures.other", "figures.plot", "figures.other"] in circles(edges)


# One owner of every file name: results_layout. A string that is a path under results/ or
# resources/, or a Parquet file name (also one built in an f-string), elsewhere in the library
# would be a second owner. Messages and docstrings may name files (they hold spaces or are docs).
PATH_LIKE = re.compile(r"^(results|resources)(/|$)|^[\w{}=/-][\w{}.=/-]*\.parquet$")


def built_file_names(root: Path = LIBRARY) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "results_layout.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        in_fstrings = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                text = "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) in docstrings or id(node) in in_fstrings:
                    continue
                text = node.value
            else:
                continue
            if PATH_LIKE.search(text):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {text!r}")
    return sorted(found)


def test_no_library_module_builds_a_results_path():
    assert built_file_names() == []


def test_the_name_check_finds_a_built_name(tmp_path):
    (tmp_path / "reader.py").write_text(
        'def table(folder, layer):\n    return f"{folder}/{layer}.parquet"\n\nROOT = "results/extract"\n'
    )
    assert built_file_names(tmp_path) == ["reader.py:2: '{}/{}.parquet'", "reader.py:4: 'results/extract'"]
