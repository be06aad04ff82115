import os
import subprocess
import sys

from tests.packaging.util import PACKAGING, ROOT, load

LAUNCHER = PACKAGING / "launcher.py"
DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")


def launch(*args: str, cwd=None, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in DISPLAY_VARIABLES}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, str(LAUNCHER), *args], env={**base, **env}, cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=120)


def test_starting_the_app_without_a_display_explains_instead_of_aborting(tmp_path):
    done = launch(cwd=tmp_path)
    assert done.returncode == 3
    assert "SD Studio cannot start" in done.stderr and "no display found" in done.stderr


def test_starting_on_a_dead_x_display_explains_instead_of_aborting(tmp_path):
    done = launch(cwd=tmp_path, DISPLAY=":987")
    assert done.returncode == 3, done.stderr  # Qt's own failure would be SIGABRT (-6)
    assert "SD Studio cannot start" in done.stderr
    assert "could not load the Qt platform plugin" not in done.stderr.lower()


def test_commands_run_through_the_launcher(tiny_path, tmp_path):
    done = launch("inspect", str(tiny_path), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"family": "demo"' in done.stdout


def test_the_launcher_forbids_network_access_before_anything_loads():
    code = (f"import os, runpy; runpy.run_path({str(LAUNCHER)!r}, run_name='launcher');"
            "print(os.environ['HF_HUB_OFFLINE'], os.environ['TRANSFORMERS_OFFLINE'])")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["1", "1"], done.stderr


def test_system_tools_get_the_systems_library_path_back(monkeypatch):
    launcher = load("launcher")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/sdstudio/_internal")
    monkeypatch.setenv("LD_LIBRARY_PATH_ORIG", "/usr/local/lib")
    assert launcher.system_environment()["LD_LIBRARY_PATH"] == "/usr/local/lib"
    monkeypatch.delenv("LD_LIBRARY_PATH_ORIG")
    assert "LD_LIBRARY_PATH" not in launcher.system_environment()
