import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio.cli import main
from sdstudio.history.png import read_png_parameters


def test_generate_writes_pngs_with_parameters_and_from_reproduces_them(tmp_path, capsys, tiny_path):
    out = tmp_path / "out"
    args = ["generate", "--model", str(tiny_path), "--prompt", "red apple, shiny", "--negative", "dull",
            "--steps", "3", "--width", "64", "--height", "64", "--seed", "42", "--sampler", "DPM++ 2M",
            "--scheduler", "karras", "--batch", "2", "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    files = sorted(out.glob("*.png"))
    assert len(files) == 2 and "3/3" in captured.err
    text, ours = read_png_parameters(files[1])
    assert text.startswith("red apple, shiny\nNegative prompt: dull\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras")
    assert "Seed: 43" in text and ours["request"]["seed"] == 43

    assert main(["params", str(files[1])]) == 0
    assert "Seed: 43" in capsys.readouterr().out

    again = tmp_path / "again"
    assert main(["generate", "--from", str(files[1]), "--model", str(tiny_path), "--out", str(again)]) == 0
    rerun = next(again.glob("*.png"))
    assert np.array_equal(np.asarray(Image.open(rerun)), np.asarray(Image.open(files[1])))


def test_generate_bad_input_exits_non_zero_with_one_line(tmp_path, capsys, tiny_path):
    assert main(["generate", "--model", str(tiny_path), "--width", "65", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: width 65 is not a multiple of 8") and err.count("\n") == 1


def test_generate_missing_model_file(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_params_of_image_without_parameters(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert main(["params", str(tmp_path / "plain.png")]) == 2
    assert "no generation parameters" in capsys.readouterr().err


def test_generate_device_flag(tmp_path, capsys, tiny_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["generate", "--model", str(tiny_path), "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "--device cpu" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_path), "--device", "cpu", "--steps", "1", "--out", str(tmp_path)]) == 0
    assert "runs on cpu fp32" in capsys.readouterr().err


# A process that runs the CLI and then says whether torch was imported: an argument error must come before it.
_PROBE = ("import sys\nfrom sdstudio.cli import main\nrc = main(sys.argv[1:])\n"
          "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded')\nsys.exit(rc)\n")


def _run_cli(*args, cwd):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, cwd=cwd, env=env, timeout=120)


def _bad_args(tmp_path, tiny_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    model = ["generate", "--model", str(tiny_path)]
    return {
        "steps 0": ([*model, "--steps", "0", "--out", str(tmp_path / "o")], "steps 0 is out of range"),
        "negative width": ([*model, "--width", "-64", "--out", str(tmp_path / "o")], "width -64 is out of range"),
        "out under a file": ([*model, "--out", str(blocker / "sub")], "cannot write images there"),
        # Bytes that are not UTF-8 reach sys.argv as lone surrogates (PEP 383).
        "prompt not text": ([*model, "--prompt", b"caf\xe9 \xff", "--out", str(tmp_path / "o")],
                            "prompt is not valid text"),
        "far too big": ([*model, "--width", "4096", "--height", "4096", "--out", str(tmp_path / "o")],
                        "4096x4096 is 4096x the model's native 64x64 area"),
    }


@pytest.mark.parametrize("case", ["steps 0", "negative width", "out under a file", "prompt not text", "far too big"])
def test_generate_refuses_bad_arguments_before_torch_loads(tmp_path, tiny_path, case):
    argv, message = _bad_args(tmp_path, tiny_path)[case]
    done = _run_cli(*argv, cwd=tmp_path)
    err = done.stderr.decode("utf-8", "backslashreplace")
    assert done.returncode == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert done.stdout.decode().strip() == "torch not loaded"
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_generate_out_problems_are_found_before_generating(tmp_path, capsys, tiny_path, monkeypatch):
    from sdstudio.engine import api

    monkeypatch.setattr(api.Engine, "load_model", lambda *a, **k: pytest.fail("must not load a model"))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["generate", "--model", str(tiny_path), "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert f"--out {blocker}: cannot write images there" in err and err.count("\n") == 1
    assert blocker.read_text() == "x"


def test_a_failed_save_says_how_many_images_were_kept(tmp_path, capsys, tiny_path, monkeypatch):
    saved = []

    def disk_fills_up(path, *a):
        if saved:
            raise OSError(28, "No space left on device")
        saved.append(path)
        path.write_bytes(b"png")

    monkeypatch.setattr("sdstudio.history.png.save_png", disk_fills_up)
    args = ["generate", "--model", str(tiny_path), "--steps", "1", "--batch", "2", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "No space left on device" in err and "1 of 2 images were saved" in err
    assert [p.name for p in (tmp_path / "o").iterdir()] == [saved[0].name]


def test_sizes_default_from_the_model(tmp_path, capsys, tiny_path):
    out = tmp_path / "o"
    assert main(["generate", "--model", str(tiny_path), "--steps", "1", "--height", "128", "--out", str(out)]) == 0
    [png] = out.glob("*.png")
    assert Image.open(png).size == (64, 128)  # the tiny model is native 64 px, not the 512 of SD 1.5


def test_an_init_image_keeps_its_aspect_at_the_models_area(tmp_path, capsys, tiny_path):
    init = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 600, 3), dtype=np.uint8)).save(init)
    out = tmp_path / "o"
    assert main(["generate", "--model", str(tiny_path), "--steps", "2", "--init-image", str(init),
                 "--out", str(out)]) == 0
    [png] = out.glob("*.png")
    assert Image.open(png).size == (88, 48)  # 2:1 at about 64x64's area, in multiples of 8


def test_a_job_far_beyond_the_model_runs_only_with_yes(tmp_path, capsys, tiny_path, monkeypatch):
    from sdstudio import generate_cli

    args = ["generate", "--model", str(tiny_path), "--steps", "1", "--width", "512", "--height", "320",
            "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "512x320 is 40x the model's native 64x64 area" in err and "--width/--height" in err and "--yes" in err
    ran = []
    monkeypatch.setattr(generate_cli, "ProgressBar", lambda: ran.append)
    assert main([*args, "--yes"]) == 0
    assert Image.open(next((tmp_path / "o").glob("*.png"))).size == (512, 320) and ran


def _pickled(tmp_path, family_shapes: bool):
    import torch

    from tests.engine.family_shapes import checkpoint_shapes
    from tests.engine.test_checkpoint import tiny_state_dict

    if family_shapes:
        shapes = {k: v for k, v in checkpoint_shapes("sd1").items() if k.startswith("model.diffusion_model.")
                  and ("input_blocks.0.0" in k or "attn2.to_k" in k)}
        state = {k: torch.zeros(v, dtype=torch.float16) for k, v in shapes.items()}
    else:
        state = {"state_dict": tiny_state_dict()}
    torch.save(state, tmp_path / "m.ckpt")
    return tmp_path / "m.ckpt"


def test_generate_refuses_a_pickle_unless_allowed(tmp_path, capsys):
    ckpt = _pickled(tmp_path, family_shapes=False)
    args = ["generate", "--model", str(ckpt), "--steps", "1", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "refuses them by default. Convert it to .safetensors, or pass --allow-pickle (command line) / enable " \
           "Settings › Allow pickled checkpoints (app) to load it in weights-only mode." in err
    # Allowed, the file is opened (weights-only) and detected: a pickle has no metadata, so the tiny demo model's
    # family cannot be told from its shapes, and that (not the refusal) is what is reported.
    assert main([*args, "--allow-pickle"]) == 2
    err = capsys.readouterr().err
    assert "refuses" not in err and "context 32" in err and err.count("\n") == 1


def test_inspect_reads_a_pickle_only_when_allowed(tmp_path, capsys):
    ckpt = _pickled(tmp_path, family_shapes=True)
    assert main(["inspect", str(ckpt)]) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert main(["inspect", str(ckpt), "--allow-pickle", "--json"]) == 0
    assert '"family": "sd1"' in capsys.readouterr().out


# `sdstudio` (the console script calls sdstudio.cli:main), `python -m sdstudio` and `python main.py`.
ENTRY_POINTS = {
    "sdstudio": ["-c", "import sys; from sdstudio.cli import main; sys.exit(main())"],
    "python -m sdstudio": ["-m", "sdstudio"],
    "main.py": [str(Path(__file__).resolve().parents[1] / "main.py")],
}


def _start(entry: str, *args: str, cwd, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    base["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return subprocess.run([sys.executable, *ENTRY_POINTS[entry], *args], capture_output=True, text=True, cwd=cwd,
                          env={**base, **env}, timeout=120)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("env", [{}, {"QT_QPA_PLATFORM": "xcb"}], ids=["no display", "xcb forced, no display"])
def test_every_entry_point_explains_a_missing_display_instead_of_aborting(entry, env, tmp_path):
    done = _start(entry, cwd=tmp_path, SDSTUDIO_HOME=str(tmp_path / "home"), **env)
    assert done.returncode == 3, done.stderr  # Qt's own abort would be -6 (SIGABRT)
    assert done.stderr.startswith("SD Studio cannot start.\n\n"), done.stderr
    assert "Aborted" not in done.stderr and "qt.qpa" not in done.stderr
    if env and _xcb_plugin_unloadable():
        # With X11 forced, the plugin's own libraries are checked first: on a machine without them (a bare
        # container) the message names the missing one instead of the display.
        assert "is not installed" in done.stderr and "apt install" in done.stderr, done.stderr
    else:
        assert "display" in done.stderr, done.stderr


def _xcb_plugin_unloadable() -> bool:
    from sdstudio.preflight import _xcb_plugin

    plugin = _xcb_plugin()
    try:
        if plugin is not None:
            ctypes.CDLL(str(plugin))
    except OSError:
        return True
    return False


@pytest.mark.parametrize("entry", ["sdstudio", "python -m sdstudio"])
def test_an_unknown_command_gets_the_usage_not_the_app(entry, tmp_path):
    done = _start(entry, "frobnicate", cwd=tmp_path, DISPLAY=":987")
    assert done.returncode == 2
    assert done.stderr.startswith("usage: sdstudio") and "invalid choice: 'frobnicate'" in done.stderr
