"""The CI smoke test: `python -m sdstudio.training --quick` runs every stage and ships files the engine loads."""

import json

import pytest
from safetensors import safe_open

from sdstudio.engine.api import Engine
from sdstudio.engine.checkpoint import load_taesd_file
from sdstudio.engine.request import GenerationRequest
from sdstudio.training.__main__ import main
from sdstudio.training.export import model_paths

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
    for stage in ("autoencoder", "decoder", "diffusion", "preview"):
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


def test_rerun_resumes_finished_stages_without_training_again(quick_run):
    root, args = quick_run
    before = (root / "logs" / "diffusion.csv").read_text()
    assert main(args) == 0
    assert (root / "logs" / "diffusion.csv").read_text() == before
