"""`sdstudio generate` starts from the app's defaults and, without --out, saves into the app's history."""

from __future__ import annotations

from pathlib import Path

from sdstudio import paths
from sdstudio.cli import build_parser, main
from sdstudio.engine.request import GenerationRequest
from sdstudio.generate_cli import build_request
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
