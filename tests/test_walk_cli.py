"""`python -m sdstudio walk`: frames with parameters that re-run alone, animations, the history, refusals."""

import numpy as np
import pytest
from PIL import Image

from sdstudio.cli import main
from sdstudio.history.png import read_png_parameters


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture
def ends(tmp_path, tiny_path, capsys):
    """Two tiny-model images at different seeds and prompts, and the common arguments."""
    common = ["--model", str(tiny_path), "--steps", "3", "--width", "64", "--height", "64", "--sampler", "Euler",
              "--scheduler", "normal", "--cfg", "4"]
    paths = []
    for name, prompt, seed in (("a", "red apple, shiny", "5"), ("b", "a blue circle", "9")):
        out = tmp_path / name
        assert main(["generate", *common, "--prompt", prompt, "--seed", seed, "--out", str(out)]) == 0
        paths.append(next(out.glob("*.png")))
    capsys.readouterr()
    return paths[0], paths[1], tiny_path


def test_prompt_walk_writes_frames_that_start_at_a_and_re_run_alone(tmp_path, ends, capsys):
    a, b, model = ends
    out = tmp_path / "walk"
    assert main(["walk", "--from", str(a), "--to", str(b), "--frames", "4", "--what", "prompt", "--model",
                 str(model), "--out", str(out), "--webp", str(tmp_path / "w.webp"), "--gif",
                 str(tmp_path / "w.gif")]) == 0
    frames = sorted(out.glob("*.png"))
    assert len(frames) == 4
    assert np.array_equal(pixels(frames[0]), pixels(a))
    text, ours = read_png_parameters(frames[1])
    assert "Blend prompt: a blue circle, Blend strength: 0.3333333333333333" in text
    assert "Seed: 5" in text and ours["request"]["blend_strength"] == pytest.approx(1 / 3)
    last_text, _ = read_png_parameters(frames[-1])
    assert last_text.startswith("a blue circle\n") and "Blend" not in last_text and "Seed: 5" in last_text
    # a middle frame re-runs to its pixels from its parameters alone
    again = tmp_path / "again"
    assert main(["generate", "--from", str(frames[2]), "--model", str(model), "--out", str(again)]) == 0
    assert np.array_equal(pixels(next(again.glob("*.png"))), pixels(frames[2]))
    for name in ("w.webp", "w.gif"):
        with Image.open(tmp_path / name) as anim:
            assert anim.n_frames == 4
    assert len(set(pixels(f).tobytes() for f in frames)) == 4


def test_without_out_the_frames_go_into_the_history(tmp_path, ends, home, capsys):
    a, b, model = ends
    assert main(["walk", "--from", str(a), "--to", str(b), "--frames", "2", "--what", "prompt", "--model",
                 str(model)]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.endswith(".png")]
    assert len(printed) == 2
    from sdstudio import paths
    from sdstudio.history import schema
    from sdstudio.history.store import HistoryStore

    store = HistoryStore(paths.outputs_dir(), paths.history_db())
    try:
        assert store.count() == 2
        walk_ids = {e.walk_id for e in store.page()}  # one walk: the gallery shows it as one tile
        assert len(walk_ids) == 1 and "" not in walk_ids
        assert store.count(schema.Filter(group_walks=True)) == 1
    finally:
        store.close()


@pytest.mark.parametrize("extra, message", [
    (["--frames", "1"], "frames 1 is out of range"),
    (["--webp", "walk.gif"], "must end in .webp"),
    (["--gif", "walk.png"], ".webp or .gif"),
])
def test_bad_walks_are_refused_in_one_line_before_loading(tmp_path, ends, capsys, extra, message):
    a, b, model = ends
    assert main(["walk", "--from", str(a), "--to", str(b), "--model", str(model), "--out", str(tmp_path / "o"),
                 "--what", "prompt", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_walk_to_the_same_image_and_missing_files_are_refused(tmp_path, ends, capsys):
    a, _, model = ends
    assert main(["walk", "--from", str(a), "--to", str(a), "--model", str(model), "--what", "prompt"]) == 2
    assert "same prompt" in capsys.readouterr().err
    assert main(["walk", "--from", str(a), "--to", str(tmp_path / "nope.png"), "--model", str(model)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_both_walk_frame_carries_variation_seed_and_blend_and_re_runs_from_its_a1111_text(tmp_path, ends):
    a, b, model = ends
    out = tmp_path / "walk"
    assert main(["walk", "--from", str(a), "--to", str(b), "--frames", "3", "--model", str(model), "--out",
                 str(out)]) == 0
    frames = sorted(out.glob("*.png"))
    text, _ = read_png_parameters(frames[1])
    assert "Seed: 5" in text and "Variation seed: 9, Variation seed strength: 0.5" in text
    assert "Blend prompt: a blue circle, Blend strength: 0.5" in text
    assert np.array_equal(pixels(frames[2]), pixels(b))  # same other parameters: the end frame is b
    # only the A1111 text: the sdstudio chunk dropped, as a site that strips metadata but our own text keeps
    from sdstudio.history.png import save_png

    stripped = tmp_path / "text-only.png"
    save_png(stripped, Image.open(frames[1]), text)
    again = tmp_path / "again"
    assert main(["generate", "--from", str(stripped), "--model", str(model), "--out", str(again)]) == 0
    assert np.array_equal(pixels(next(again.glob("*.png"))), pixels(frames[1]))
