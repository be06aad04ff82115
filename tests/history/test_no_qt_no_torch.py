"""The history layer stays light: importing it loads neither Qt nor torch (the CLI and tools use it too)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_history_loads_neither_qt_nor_torch() -> None:
    code = (
        "import sys, sdstudio.history, sdstudio.history.reconcile, sdstudio.history.file_parameters; "
        "print(sorted(m for m in ('PySide6', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
