import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_window_is_visible_before_torch_is_imported(tmp_path):
    env = dict(os.environ, SDSTUDIO_HOME=str(tmp_path / "home"), QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, str(ROOT / "main.py"), "--measure-startup"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    match = re.search(r"window visible after (\d+) ms \(torch imported: (\w+)\)", out.stdout)
    assert match, out.stdout
    print(f"time to visible window: {match.group(1)} ms")
    assert match.group(2) == "False"
    assert (tmp_path / "home" / "settings.ini").is_file()  # settings went to SDSTUDIO_HOME
