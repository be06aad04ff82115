"""The CI smoke test: `python -m sdstudio.training --quick` runs every stage and ships files the engine loads."""

import json

import pytest
from PIL import Image, ImageDraw
from safetensors import safe_open

from sdstudio.engine.api import Engine
from sdstudio.engine.checkpoint import load_taesd_file
from sdstudio.engine.controlnet_folder import read_controlnet_file
from sdstudio.engine.preprocessors import pairing
from sdstudio.engine.request import ControlUnit, GenerationRequest
from sdstudio.training.__main__ import main
from sdstudio.training.export import controlnet_path, model_paths

PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("quick")
    args = ["--quick", "--work-dir", str(root / "work"), "--log-dir", str(root / "logs"),
            "--out-dir", str(root / "models")]
    assert main(args) == 0
    return root, args


def test_every_stage_logs_its_losses(quick_run):
    root, _ = quick_run
    for stage in ("autoencoder", "decoder", "diffusion", "preview", "controlnet"):
        rows = (root / "logs" / f"{stage}.csv").read_text().splitlines()
        assert rows[0].startswith("step,elapsed_s,loss")
        assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]


def test_checkpoint_has_ldm_layout_fp16_and_config_metadata(quick_run):
    root, _ = quick_run
    checkpoint, preview = model_paths(root / "models")
    with safe_open(str(checkpoint), "pt") as f:
        keys = list(f.keys())
        config = json.loads(f.metadata()["sdstudio.config"])
        assert f.get_tensor("model.diffusion_model.input_blocks.0.0.weight").dtype.is_floating_point
        assert str(f.get_tensor("first_stage_model.decoder.conv_out.weight").dtype) == "torch.float16"
        token_embedding = f.get_tensor("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight")
    assert all(k.startswith(PREFIXES) for k in keys)
    assert {k.split(".")[0] for k in keys} == {"model", "first_stage_model", "cond_stage_model"}
    assert token_embedding.shape[0] == 49408
    assert config["family"] == "demo" and config["prediction"] == "eps" and config["default_size"] == 64
    assert config["scale_factor"] > 0
    assert len(config["latent_rgb"]) == 4 and all(len(row) == 3 for row in config["latent_rgb"])
    assert config["text"] == {"num_attention_heads": 4, "pad": "eos", "hidden_act": "quick_gelu", "layer": "last"}
    assert (checkpoint.stat().st_size + preview.stat().st_size) <= 40_000_000


def test_preview_decoder_loads_in_madebyollin_layout(quick_run):
    root, _ = quick_run
    taesd = load_taesd_file(model_paths(root / "models")[1])
    with safe_open(str(model_paths(root / "models")[1]), "pt") as f:
        assert "1.weight" in f.keys()  # layer 0 is the clamp, layer 1 the first conv
    assert taesd.decoder is not None


def test_engine_generates_with_the_exported_model(quick_run):
    root, _ = quick_run
    checkpoint, preview = model_paths(root / "models")
    request = GenerationRequest(prompt="red apple", steps=2, cfg_scale=5.0, width=64, height=64,
                                model=str(checkpoint), taesd=str(preview))
    result = Engine().generate(request)
    assert result.images[0].size == (64, 64)


def test_controlnet_ships_in_the_original_layout_named_for_canny_and_the_demo_family(quick_run):
    root, _ = quick_run
    path = controlnet_path(root / "models")
    assert path.parent.name == "ControlNet" and pairing(path.stem) == "canny"
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        assert str(f.get_tensor("zero_convs.0.0.weight").dtype) == "torch.float16"
    assert {"input_hint_block.0.weight", "middle_block_out.0.weight", "input_blocks.0.0.weight"} <= keys
    assert not any(k.startswith(("control_model.", "model.")) for k in keys)
    assert read_controlnet_file(path).family == "demo"
    total = sum(p.stat().st_size for p in (*model_paths(root / "models"), path))
    assert total <= 60_000_000


def test_engine_generates_with_the_exported_controlnet_and_it_steers(quick_run):
    root, _ = quick_run
    checkpoint, preview = model_paths(root / "models")
    drawn = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(drawn).ellipse((12, 12, 52, 52), outline="white", width=2)
    request = GenerationRequest(prompt="", steps=2, cfg_scale=5.0, width=64, height=64, seed=1,
                                model=str(checkpoint), taesd=str(preview))
    unit = ControlUnit(model=str(controlnet_path(root / "models")), image=drawn, preprocessor="none")
    engine = Engine()
    plain = engine.generate(request).images[0]
    steered = engine.generate(request.replace(control_units=(unit,))).images[0]
    assert steered.size == (64, 64)
    # Three steps from zero convs already move the residuals off zero, so the image changes (slightly).
    assert plain.tobytes() != steered.tobytes()


def test_rerun_resumes_finished_stages_without_training_again(quick_run):
    root, args = quick_run
    before = [(root / "logs" / f"{stage}.csv").read_text() for stage in ("diffusion", "controlnet")]
    assert main(args) == 0
    assert [(root / "logs" / f"{stage}.csv").read_text() for stage in ("diffusion", "controlnet")] == before
