"""The layers import one way (docs/architecture.md): engine, history, remote, training and the API server never
import Qt or the UI, and history and remote never import torch. Checked on the source (every import statement, lazy
ones included) and at run time (what importing the engine's API, the training package and the server loads)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sdstudio"
QT = ("PySide6", "shiboken6", "PyQt5", "PyQt6", "sdstudio.ui")
FORBIDDEN = {"engine": QT, "training": QT, "history": (*QT, "torch"), "remote": (*QT, "torch"), "server": QT}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in a source file; relative imports resolved against the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found += [(node.lineno, module)]
    return found


def violations(layer: str) -> list[str]:
    out = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for line, module in imported_modules(path):
            if any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN[layer]):
                out.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return out


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_source_imports_nothing_above_it(layer):
    assert (PACKAGE / layer).is_dir()
    assert violations(layer) == [], f"sdstudio/{layer} must not import {', '.join(FORBIDDEN[layer])}"


def test_the_source_check_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    layer = tmp_path / "sdstudio" / "history"
    layer.mkdir(parents=True)
    (layer / "bad.py").write_text("def f():\n    import torch\n    from ..ui import gallery\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "sdstudio")
    assert violations("history") == ["sdstudio/history/bad.py:2 imports torch",
                                      "sdstudio/history/bad.py:3 imports sdstudio.ui"]


@pytest.mark.parametrize("module, forbidden", [
    ("sdstudio.engine.api", ("PySide6", "shiboken6", "sdstudio.ui")),
    ("sdstudio.training", ("PySide6", "shiboken6", "sdstudio.ui")),
    ("sdstudio.history.store", ("PySide6", "shiboken6", "sdstudio.ui", "torch")),
    ("sdstudio.server.app", ("PySide6", "shiboken6", "sdstudio.ui")),
])
def test_importing_a_lower_layer_loads_nothing_above_it(module, forbidden):
    code = (f"import sys, {module}\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r}"
            " or m.startswith('sdstudio.ui')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"importing {module} loaded {done.stdout.strip()}"
