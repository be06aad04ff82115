"""Draft decode: the final image through the tiny preview VAE instead of the full VAE (fast path)."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.errors import RequestError, SDStudioError
from sdstudio.engine.pipeline import generate
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.taesd import TAESD

REQ = GenerationRequest(prompt="a red apple", steps=3, cfg_scale=1.0, sampler="LCM", scheduler="sgm_uniform",
                        width=64, height=48, seed=11)


@pytest.fixture(scope="module")
def taesd_model(tiny_path, tmp_path_factory):
    torch.manual_seed(3)
    taesd = TAESD(width=8)
    for p in taesd.decoder.parameters():  # textured weights, not init's near-zero output
        p.data.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("taesd") / "tiny.taesd_decoder.safetensors"
    save_file({k: v.contiguous() for k, v in taesd.decoder.state_dict().items()}, str(path))
    return load_checkpoint(tiny_path, taesd_path=path)


def test_draft_decode_gives_the_requested_size_and_differs_from_the_full_vae(taesd_model, monkeypatch):
    vae_calls = []
    original = taesd_model.vae.decode
    monkeypatch.setattr(taesd_model.vae, "decode", lambda *a, **k: vae_calls.append(1) or original(*a, **k))
    full = generate(taesd_model, REQ.replace(batch_size=2))
    assert len(vae_calls) == 2
    vae_calls.clear()
    draft = generate(taesd_model, REQ.replace(batch_size=2, draft_decode=True))
    assert vae_calls == []  # the full VAE is not run at all
    for a, b in zip(full.images, draft.images, strict=True):
        assert b.size == (64, 48) and b.mode == "RGB"
        diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
        assert diff.mean() > 5
    assert np.asarray(draft.images[0]).std() > 1  # a picture, not a flat colour
    assert all(r.draft_decode for r in draft.requests)  # recorded in each image's request for re-runs


def test_draft_decode_is_deterministic_and_batch_members_match_their_rerun(taesd_model):
    req = REQ.replace(batch_size=2, draft_decode=True)
    batch = generate(taesd_model, req)
    again = generate(taesd_model, batch.requests[1])
    assert np.array_equal(np.asarray(batch.images[1]), np.asarray(again.images[0]))


def test_draft_decode_is_refused_before_sampling_without_a_preview_decoder(tiny_model, monkeypatch):
    assert tiny_model.taesd is None
    monkeypatch.setattr(tiny_model.unet, "forward", lambda *a, **k: pytest.fail("sampled before refusing"))
    with pytest.raises(RequestError, match="Draft decode needs a preview decoder"):
        generate(tiny_model, REQ.replace(draft_decode=True))


def test_generate_cli_draft_decode_writes_the_field_and_refuses_without_a_decoder(home, tmp_path, tiny_path,
                                                                                 capsys):
    from PIL import Image

    from sdstudio.cli import main

    torch.manual_seed(5)
    decoder = tmp_path / "taesd_decoder.safetensors"
    save_file({k: v.contiguous() for k, v in TAESD(width=8).decoder.state_dict().items()}, str(decoder))
    common = ["generate", "--model", str(tiny_path), "--steps", "2", "--sampler", "LCM", "--cfg", "1", "--seed",
              "4", "--draft-decode", "--out", str(tmp_path / "out")]
    assert main(common) != 0
    assert "Draft decode needs a preview decoder" in capsys.readouterr().err
    assert main([*common, "--taesd", str(decoder)]) == 0
    [png] = (tmp_path / "out").glob("*.png")
    with Image.open(png) as image:
        assert image.text["parameters"].endswith("Draft decode: True")


def test_a_decoder_in_models_vae_approx_is_found_for_the_family(home, tmp_path):
    """A1111's place for TAESD: with taesd_decoder.safetensors there, a real checkpoint gets TAESD previews and
    draft decode; a damaged one is named, not skipped."""
    from sdstudio import paths
    from sdstudio.engine.api import Engine
    from tests.engine.lora_files import tiny_family_checkpoint

    tiny_path = tiny_family_checkpoint(tmp_path / "sd1-layout.safetensors", "sd1")
    stem = "taesd_decoder"  # SD 1.x's; SDXL's is taesdxl_decoder (families.py)
    engine = Engine(device="cpu")
    engine.load_model(str(tiny_path))
    assert engine.model.taesd is None
    with pytest.raises(RequestError, match=f"put {stem}.safetensors in .*VAE-approx"):
        engine.generate(REQ.replace(model=str(tiny_path), draft_decode=True))
    torch.manual_seed(4)
    decoder = TAESD(width=8).decoder
    paths.approx_decoders_dir().mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in decoder.state_dict().items()},
              str(paths.approx_decoders_dir() / f"{stem}.safetensors"))
    fresh = Engine(device="cpu")
    result = fresh.generate(REQ.replace(model=str(tiny_path), draft_decode=True))
    assert fresh.model.taesd is not None and result.images[0].size == (64, 48)
    (paths.approx_decoders_dir() / f"{stem}.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}junk")
    with pytest.raises(SDStudioError, match="preview decoder .*VAE-approx.* cannot be used"):
        Engine(device="cpu").load_model(str(tiny_path))
