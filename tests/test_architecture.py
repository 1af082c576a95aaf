"""The code's shape, held by checks: no import cycles, the project's own modules imported at
module level (so the dependencies are visible at the top of each file), and the
import-linter contracts in pyproject.toml (run by `make test` as `lint-imports`)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "data_products", "dashboard", "scenes")


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
                found.append(f"{rel}:{line} imports {mod} inside a function")
    assert not found, "\n".join(found)


def test_the_rules_and_evidence_detectors_never_load_torch():
    """torch and torchvision are imported where a Mask R-CNN is built, loaded or run (lazy
    third-party imports), so a run with the default detector does not pay for them."""
    import subprocess
    import sys

    code = ("import sys, pipeline.cli, pipeline.orchestration.run, pipeline.detection.detect; "
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_library_code_reports_through_logging_not_print():
    """Only the command line prints (pipeline/cli.py, and scripts' ``__main__`` blocks); library
    code reports progress through the ``rts.console`` logger (pipeline/console.py), which the
    CLI shows on stdout and a calling program routes as it likes."""
    found = []
    for pkg in ("pipeline", "data_products", "dashboard"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel == "pipeline/cli.py":
                continue
            tree = ast.parse(path.read_text())
            main_blocks = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
            skip = {id(x) for b in main_blocks for x in ast.walk(b)}
            for n in ast.walk(tree):
                if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
                        and id(n) not in skip):
                    found.append(f"{rel}:{n.lineno}")
    assert not found, found


def test_console_messages_reach_the_terminal_only_through_the_cli(capsys, caplog):
    import logging

    from pipeline import console

    console.log.handlers.clear()  # as in a program that never ran the CLI
    console.log.propagate = True
    with caplog.at_level(logging.INFO, logger="rts.console"):
        console.say("a library message")
    assert "a library message" in caplog.text and "a library message" not in capsys.readouterr().out
    console.attach()
    try:
        console.say("a terminal message")
        assert capsys.readouterr().out == "a terminal message\n"
    finally:
        console.log.handlers.clear()
        console.log.propagate = True
