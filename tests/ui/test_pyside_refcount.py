import subprocess
import sys


def test_many_signal_emits_do_not_abort_the_interpreter():
    # Run in a child: without the fix, PySide6 6.12 on Python 3.11 aborts once True's refcount reaches zero.
    code = (
        "import sdstudio.ui\n"
        "from PySide6.QtCore import QObject, Signal\n"
        "class O(QObject):\n"
        "    s = Signal(int)\n"
        "o = O()\n"
        "for i in range(20000):\n"
        "    o.s.emit(i)\n"
        "import gc; gc.collect()\n"
        "print('survived')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "survived" in out.stdout
