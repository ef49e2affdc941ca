"""The shape of the code base: files small enough to read, no private names imported across
modules, one safetensors writer. (The layering itself is checked by ``lint-imports`` in
``make test``, with the contracts in pyproject.toml.)"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vislearn"
MAX_LINES = 500


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        yield path, path.read_text()


def test_no_source_file_over_500_lines():
    long = {
        str(p.relative_to(SRC)): n for p, t in _modules() if (n := len(t.splitlines())) > MAX_LINES
    }
    assert not long, long


def test_no_private_name_imported_across_modules():
    found = []
    for path, text in _modules():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vislearn"):
                found += [
                    f"{path.relative_to(SRC)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__version__"
                ]
    assert not found, found


def test_one_safetensors_writer():
    writers = [str(p.relative_to(SRC)) for p, t in _modules() if "save_file(" in t]
    assert writers == ["core/artifacts.py"], writers
