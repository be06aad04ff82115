import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.packaging.util import PACKAGING, ROOT, load

SIZES = load("icons").PNG_SIZES


def fake_bundle(folder: Path, with_resources: bool = True) -> Path:
    """A folder laid out like dist/sdstudio: the executable, and resources under _internal/."""
    folder.mkdir(parents=True)
    exe = folder / "sdstudio"
    exe.write_text("#!/bin/sh\necho started\n")
    exe.chmod(0o755)
    for script in ("install-linux.sh", "uninstall-linux.sh"):
        shutil.copy2(PACKAGING / script, folder / script)
    if with_resources:
        resources = folder / "_internal" / "resources"
        shutil.copytree(ROOT / "sdstudio" / "resources" / "icons", resources / "icons")
        shutil.copy2(PACKAGING / "sdstudio.desktop.in", resources / "sdstudio.desktop.in")
    return folder


def run_script(script: Path, *args: str, data: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, XDG_DATA_HOME=str(data), HOME=str(data.parent))
    return subprocess.run(["sh", str(script), *args], env=env, capture_output=True, text=True, timeout=60)


def read_entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read(path, encoding="utf-8")
    return dict(parser["Desktop Entry"])


def exec_argv(value: str) -> list[str]:
    """Desktop Entry Specification, "The Exec key": undo the string escapes (\\\\ -> \\), then split into
    arguments; inside double quotes a backslash escapes ", `, $ and \\; %% is a literal %."""
    text = value.replace("\\\\", "\\")
    args, current, quoted, i = [], "", False, 0
    while i < len(text):
        char = text[i]
        if quoted and char == "\\" and text[i + 1] in '"`$\\':
            current, i = current + text[i + 1], i + 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == " " and not quoted:
            if current:
                args.append(current)
            current = ""
        else:
            current += char
        i += 1
    return [arg.replace("%%", "%") for arg in args + ([current] if current else [])]


def installed_files(data: Path) -> list[Path]:
    files = [data / "applications" / "sdstudio.desktop", data / "icons/hicolor/scalable/apps/sdstudio.svg"]
    return files + [data / f"icons/hicolor/{s}x{s}/apps/sdstudio.png" for s in SIZES]


@pytest.mark.parametrize("folder_name", ["SD Studio", 'odd "$name` 100%'])
def test_install_adds_a_menu_entry_that_starts_the_bundle(tmp_path, folder_name):
    bundle = fake_bundle(tmp_path / "apps" / folder_name)
    data = tmp_path / "data"
    done = run_script(bundle / "install-linux.sh", data=data)
    assert done.returncode == 0, done.stderr
    entry = read_entry(data / "applications" / "sdstudio.desktop")
    assert entry["Type"] == "Application" and entry["Name"] == "SD Studio"
    assert entry["Icon"] == "sdstudio" and entry["Terminal"] == "false"
    assert exec_argv(entry["Exec"]) == [str(bundle / "sdstudio")]
    assert entry["TryExec"] == str(bundle / "sdstudio")
    started = subprocess.run(exec_argv(entry["Exec"]), capture_output=True, text=True, timeout=30)
    assert started.stdout == "started\n"
    for size in SIZES:
        icon = data / f"icons/hicolor/{size}x{size}/apps/sdstudio.png"
        assert icon.read_bytes() == (ROOT / f"sdstudio/resources/icons/sdstudio-{size}.png").read_bytes()
    assert (data / "icons/hicolor/scalable/apps/sdstudio.svg").is_file()


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None,
                    reason="desktop-file-validate is not installed (apt install desktop-file-utils)")
def test_the_entry_passes_desktop_file_validate(tmp_path):
    bundle = fake_bundle(tmp_path / "Program Files" / 'odd "$name` 100%')
    data = tmp_path / "data"
    assert run_script(bundle / "install-linux.sh", data=data).returncode == 0
    done = subprocess.run(["desktop-file-validate", str(data / "applications" / "sdstudio.desktop")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_install_from_a_checkout_takes_the_repository_resources(tmp_path):
    bundle = fake_bundle(tmp_path / "bundle", with_resources=False)
    data = tmp_path / "data"
    done = run_script(PACKAGING / "install-linux.sh", str(bundle), data=data)
    assert done.returncode == 0, done.stderr
    assert all(path.is_file() for path in installed_files(data))


def test_install_refuses_a_folder_without_the_executable(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_script(PACKAGING / "install-linux.sh", str(empty), data=tmp_path / "data")
    assert done.returncode != 0
    assert "not an executable" in done.stderr
    assert not (tmp_path / "data" / "applications").exists()


def test_uninstall_removes_exactly_what_install_added(tmp_path):
    bundle = fake_bundle(tmp_path / "bundle")
    data = tmp_path / "data"
    other = data / "applications" / "other.desktop"
    other.parent.mkdir(parents=True)
    other.write_text("[Desktop Entry]\n")
    assert run_script(bundle / "install-linux.sh", data=data).returncode == 0
    done = run_script(bundle / "uninstall-linux.sh", data=data)
    assert done.returncode == 0, done.stderr
    assert not any(path.exists() for path in installed_files(data))
    assert other.is_file() and (bundle / "sdstudio").is_file()
