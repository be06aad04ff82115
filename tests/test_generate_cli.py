"""`sdstudio generate` starts from the app's defaults and, without --out, saves into the app's history."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageChops

from sdstudio import paths
from sdstudio.cli import build_parser, main
from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import GenerationRequest
from sdstudio.generate_cli import build_request
from sdstudio.history.parameters import parse_parameters
from sdstudio.history.png import png_text_chunks
from sdstudio.history.store import HistoryStore
from sdstudio.ui.prompt_state import PromptState, build_requests


def args_for(*argv: str):
    return build_parser().parse_args(["generate", *argv])


def test_cli_and_app_make_the_same_request_from_the_same_prompt_and_seed():
    cli = build_request(args_for("--prompt", "a red fox", "--seed", "7", "--width", "64", "--height", "64"))
    [app] = build_requests(PromptState(prompt="a red fox", seed=7, width=64, height=64))
    assert cli == app
    # The shared defaults are the ones the app always showed.
    assert (app.sampler, app.scheduler, app.cfg_scale, app.steps) == ("Euler a", "karras", 5.0, 20)


def test_prompt_state_reads_every_shared_default_from_the_request():
    state, request = PromptState(), GenerationRequest()
    for name in ("sampler", "scheduler", "steps", "cfg_scale", "batch_size", "strength", "mask_blur", "only_masked"):
        assert getattr(state, name) == getattr(request, name), name


def test_seed_is_random_unless_given(monkeypatch):
    drawn = iter([123456789, 42])
    monkeypatch.setattr("sdstudio.generate_cli.random.randrange", lambda top: next(drawn))
    assert build_request(args_for("--prompt", "x")).seed == 123456789
    assert build_request(args_for("--prompt", "x", "--seed", "-1")).seed == 42  # -1 means random, as in the app
    assert build_request(args_for("--prompt", "x", "--seed", "5")).seed == 5


def test_generate_without_out_saves_into_the_apps_history(home, capsys, tiny_path):
    assert main(["generate", "--model", str(tiny_path), "--prompt", "into the gallery", "--steps", "1",
                 "--seed", "31", "--batch", "2"]) == 0
    printed = [Path(line) for line in capsys.readouterr().out.split()]
    store = HistoryStore(paths.outputs_dir(), paths.history_db())
    entries = store.page(limit=10)
    assert sorted(e.seed for e in entries) == [31, 32]
    assert {e.prompt for e in entries} == {"into the gallery"}
    assert sorted(e.file for e in entries) == sorted(printed)
    assert all(p.is_file() and p.is_relative_to(paths.outputs_dir()) for p in printed)
    assert not Path("outputs").exists() or not any(Path("outputs").glob("*-31.png"))


def test_generate_with_out_writes_plain_pngs_and_leaves_history_alone(home, tmp_path, capsys, tiny_path):
    out = tmp_path / "elsewhere"
    assert main(["generate", "--model", str(tiny_path), "--steps", "1", "--seed", "3", "--out", str(out)]) == 0
    assert [p.name for p in out.glob("*.png")] == ["00000-3.png"]
    assert not paths.history_db().exists() or HistoryStore(paths.outputs_dir(), paths.history_db()).count() == 0


def test_a_read_only_history_is_refused_before_loading(home, capsys, tiny_path, monkeypatch):
    HistoryStore(paths.outputs_dir(), paths.history_db()).close()
    monkeypatch.setattr("sdstudio.history.store._unwritable", lambda db: "the disk is read-only")
    assert main(["generate", "--model", str(tiny_path), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "the disk is read-only" in err and "--out DIR" in err


def test_the_cli_runs_the_a1111_samplers_and_align_your_steps(home, tmp_path, capsys, tiny_path):
    for sampler, scheduler in (("UniPC", "align_your_steps"), ("DPM adaptive", "karras"),
                               ("uni_pc_bh2", "normal")):
        out = tmp_path / sampler
        assert main(["generate", "--model", str(tiny_path), "--prompt", "fox", "--steps", "4", "--seed", "1",
                     "--sampler", sampler, "--scheduler", scheduler, "--out", str(out)]) == 0
        assert len(list(out.glob("*.png"))) == 1
    help_text = build_parser()._subparsers._group_actions[0].choices["generate"].format_help()
    assert "PLMS" in help_text and "align_your_steps" in help_text


def test_variation_flags_set_the_request(monkeypatch):
    drawn = iter([123, 456, 789])
    monkeypatch.setattr("sdstudio.generate_cli.random.randrange", lambda top: next(drawn))
    req = build_request(args_for("--prompt", "x", "--seed", "5", "--variation-seed", "7", "--variation-strength",
                                 "0.3", "--seed-resize-from", "512x768"))
    assert (req.seed, req.subseed, req.subseed_strength) == (5, 7, 0.3)
    assert req.seed_resize_from == (512, 768)
    # A strength without a variation seed draws one, as the seed is drawn; -1 asks for that explicitly.
    assert build_request(args_for("--seed", "5", "--variation-strength", "0.5")).subseed == 123
    assert build_request(args_for("--seed", "5", "--variation-seed", "-1", "--variation-strength", "1")).subseed == 456
    plain = build_request(args_for("--seed", "5"))
    assert (plain.subseed_strength, plain.seed_resize_from) == (0.0, None)


def test_bad_variation_flags_are_refused(capsys):
    with pytest.raises(RequestError, match="--variation-seed does nothing at strength 0"):
        build_request(args_for("--seed", "5", "--variation-seed", "9"))
    with pytest.raises(SystemExit):
        args_for("--seed-resize-from", "512")
    assert "not a size: use WxH" in capsys.readouterr().err
    assert main(["generate", "--seed", "1", "--variation-strength", "1.5", "--out", "unused"]) == 2
    assert "variation strength 1.5 is out of range" in capsys.readouterr().err


def test_generate_writes_variations_that_rerun_from_their_files(home, tmp_path, capsys, tiny_path):
    out = tmp_path / "vary"
    assert main(["generate", "--model", str(tiny_path), "--prompt", "fox", "--steps", "2", "--seed", "3",
                 "--width", "64", "--height", "64", "--batch", "2", "--variation-seed", "7",
                 "--variation-strength", "0.3", "--seed-resize-from", "48x56", "--out", str(out)]) == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 2
    subseeds = []
    for file in files:
        with open(file, "rb") as f:
            params = parse_parameters(png_text_chunks(f)["parameters"])
        assert (params["Seed"], params["Variation seed strength"], params["Seed resize from"]) == ("3", "0.3", "48x56")
        subseeds.append(params["Variation seed"])
    assert sorted(subseeds) == ["7", "8"]
    again = tmp_path / "again"
    assert main(["generate", "--model", str(tiny_path), "--from", str(files[1]), "--out", str(again)]) == 0
    [rerun] = again.glob("*.png")
    with Image.open(files[1]) as a, Image.open(rerun) as b:
        assert ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None
