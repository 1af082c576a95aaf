"""The code's shape, held by checks: no import cycles, the project's own modules imported at
module level (so the dependencies are visible at the top of each file), and the
import-linter contracts in pyproject.toml (run by `make test` as `lint-imports`)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "data_products", "dashboard", "scenes")
#: where a function may import one of the project's modules: the command-line dispatcher
#: loads a command's module when that command runs (so that ``rts --help`` starts in a
#: fraction of a second), and the detector chooser loads the torch-bearing Mask R-CNN
#: module only when that detector is used
LAZY_ALLOWED = {("pipeline/cli.py", None), ("pipeline/detection/detect.py", "maskrcnn")}


def test_no_import_cycles_between_the_projects_modules():
    g = grimp.build_graph("pipeline", "data_products", "dashboard")
    cycles = sorted({tuple(sorted((a, b))) for a in g.modules for b in g.find_modules_directly_imported_by(a)
                     if a != b and g.chain_exists(importer=b, imported=a)})
    assert not cycles, cycles


def _inner_imports(path: Path):
    tree = ast.parse(path.read_text())
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for n in ast.walk(fn):
                if isinstance(n, ast.ImportFrom) and (n.level > 0 or (n.module or "").split(".")[0] in PACKAGES):
                    for a in n.names:  # a module or a name of one: pipeline.detection.maskrcnn
                        yield n.lineno, ".".join(x for x in (n.module, a.name) if x)
                elif isinstance(n, ast.Import):
                    for a in n.names:
                        if a.name.split(".")[0] in PACKAGES:
                            yield n.lineno, a.name


def test_the_projects_modules_are_imported_at_module_level():
    found = []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for line, mod in _inner_imports(path):
                if (rel, None) in LAZY_ALLOWED or (rel, mod.split(".")[-1]) in LAZY_ALLOWED:
                    continue
                found.append(f"{rel}:{line} imports {mod} inside a function")
    assert not found, "\n".join(found)
