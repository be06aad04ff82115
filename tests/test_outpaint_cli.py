"""`generate --outpaint`: an inpainting job on the extended canvas, re-runnable from its PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdstudio import paths
from sdstudio.cli import build_parser, main
from sdstudio.engine.errors import RequestError
from sdstudio.engine.outpaint import Extension, blend_band, seam_band
from sdstudio.generate_cli import build_request
from sdstudio.history.store import HistoryStore
from sdstudio.outpaint_cli import OUTPAINT_STRENGTH, apply_outpaint, check_outpaint


def args_for(*argv: str):
    return build_parser().parse_args(["generate", *argv])


@pytest.fixture
def source(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(path)
    return path


def test_outpaint_makes_an_inpainting_request_on_the_extended_canvas(source):
    args = args_for("--init-image", str(source), "--outpaint", "left=16,down=20", "--seed", "3")
    req = apply_outpaint(build_request(args), args, 8)
    assert (req.width, req.height) == (64, 64)  # 44+16+4 (the extra on the extended left) x 40+20+4
    assert req.init_image.size == req.mask.size == (64, 64)
    assert req.mode == "inpaint" and req.strength == OUTPAINT_STRENGTH
    with Image.open(source) as im:
        kept = np.asarray(req.init_image)[0:40, 20:64]
        assert np.array_equal(kept, np.asarray(im.convert("RGB")))
    o = blend_band(req.mask_blur)  # the mask overlaps the original along the extended sides
    assert np.asarray(req.mask)[0 : 40 - o, 20 + o : 64].max() == 0 and np.asarray(req.mask)[40 - o :].min() == 255
    explicit = args_for("--init-image", str(source), "--outpaint", "all=8", "--strength", "0.6",
                        "--outpaint-fill", "noise")
    assert apply_outpaint(build_request(explicit), explicit, 8).strength == 0.6


def test_only_masked_outpaint_samples_the_box_around_the_new_area_at_its_own_size(tmp_path):
    source = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(source)
    args = args_for("--init-image", str(source), "--outpaint", "right=16", "--only-masked", "--seed", "3",
                    "--mask-blur", "4")
    req = apply_outpaint(build_request(args), args, 8)
    assert req.only_masked and req.init_image.size == req.mask.size == (112, 80)  # the whole canvas goes in
    # the mask starts blend_band(4) = 13 px inside the original (x = 83), padded by 32: x 51..112 -> 61 -> 64
    assert (req.width, req.height) == (64, 80)
    told = args_for("--init-image", str(source), "--outpaint", "right=16", "--only-masked", "--width", "128",
                    "--height", "160")
    assert (lambda r: (r.width, r.height))(apply_outpaint(build_request(told), told, 8)) == (128, 160)


def test_without_outpaint_nothing_changes(source):
    args = args_for("--init-image", str(source))
    req = build_request(args)
    assert apply_outpaint(req, args, 8) is req


@pytest.mark.parametrize("argv, message", [
    (["--outpaint", "left=64"], "needs --init-image"),
    (["--outpaint-fill", "blur", "--init-image", "IN"], "needs --outpaint"),
])
def test_flag_mistakes_are_said_before_anything_loads(source, argv, message):
    args = args_for(*[str(source) if a == "IN" else a for a in argv])
    with pytest.raises(RequestError, match=message):
        check_outpaint(build_request(args), args)


def test_a_size_that_disagrees_with_the_canvas_is_refused(source):
    args = args_for("--init-image", str(source), "--outpaint", "right=20", "--width", "72")
    with pytest.raises(RequestError, match="makes the image 64x40 .*leave out --width"):
        apply_outpaint(build_request(args), args, 8)
    same = args_for("--init-image", str(source), "--outpaint", "right=20", "--width", "64", "--height", "40")
    assert apply_outpaint(build_request(same), same, 8).width == 64


def test_a_bad_outpaint_text_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        args_for("--outpaint", "sideways=5")
    assert "SIDE=PIXELS" in capsys.readouterr().err


def test_generate_outpaints_keeps_the_original_and_reruns_from_its_file(home, capsys, tiny_path, source):
    argv = ["generate", "--model", str(tiny_path), "--prompt", "wider", "--steps", "2", "--seed", "5",
            "--sampler", "Euler", "--init-image", str(source), "--outpaint", "right=12,up=8", "--mask-blur", "2"]
    assert main(argv) == 0
    [file] = [Path(line) for line in capsys.readouterr().out.split()]
    with Image.open(file) as im:
        out = np.asarray(im.convert("RGB"), dtype=np.int16)
    with Image.open(source) as im:
        original = np.asarray(im.convert("RGB"), dtype=np.int16)
    assert out.shape == (48, 56, 3)  # 44+12 x 40+8
    band = seam_band(2)
    assert np.array_equal(out[8 + band : 48, 0 : 44 - band], original[band:, : 44 - band])
    assert main(["generate", "--model", str(tiny_path), "--from", str(file)]) == 0
    [again] = [Path(line) for line in capsys.readouterr().out.split()]
    with Image.open(file) as a, Image.open(again) as b:
        assert a.convert("RGB").tobytes() == b.convert("RGB").tobytes()
    store = HistoryStore(paths.outputs_dir(), paths.history_db())
    try:
        assert {e.mode for e in store.page(limit=10)} == {"inpaint"}
    finally:
        store.close()


def test_rounding_is_the_engines(source):
    with Image.open(source) as im:
        assert Extension(right=12, up=8).rounded(im.size, 8) == Extension(right=12, up=8)
