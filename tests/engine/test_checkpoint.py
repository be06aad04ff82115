import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdstudio.engine.checkpoint import load_checkpoint, load_taesd_file, load_vae_file
from sdstudio.engine.errors import CheckpointError
from sdstudio.engine.taesd import TAESD
from tests.tiny_checkpoint import TINY_CONFIG, tiny_state_dict, write_tiny_checkpoint


def test_loads_every_part_with_the_file_weights(tiny_path):
    model = load_checkpoint(tiny_path)
    sd = load_file(str(tiny_path))
    assert torch.equal(model.unet.state_dict()["input_blocks.0.0.weight"],
                       sd["model.diffusion_model.input_blocks.0.0.weight"])
    assert torch.equal(model.vae.state_dict()["decoder.conv_out.weight"], sd["first_stage_model.decoder.conv_out.weight"])
    assert not any(p.is_meta for m in (model.unet, model.vae, *model.text.encoders) for p in m.parameters())
    assert not any(b.is_meta for m in model.text.encoders for b in m.buffers())
    assert model.description.family == "demo" and model.description.scale_factor == 0.5


def test_fp16_file_loads_into_fp32_modules(tmp_path):
    model = load_checkpoint(write_tiny_checkpoint(tmp_path / "half.safetensors", dtype=torch.float16))
    assert model.description.dtype == "fp16"
    assert all(p.dtype == torch.float32 for p in model.unet.parameters())


def test_separate_vae_replaces_the_checkpoint_vae(tmp_path, tiny_path):
    other = {k.removeprefix("first_stage_model."): v for k, v in tiny_state_dict(seed=5).items()
             if k.startswith("first_stage_model.")}
    save_file(other, str(tmp_path / "vae.safetensors"))
    model = load_checkpoint(tiny_path, vae_path=tmp_path / "vae.safetensors")
    assert torch.equal(model.vae.state_dict()["decoder.conv_out.weight"], other["decoder.conv_out.weight"])


def test_vae_file_with_linear_attention_weights_loads(tmp_path):
    vae = {k.removeprefix("first_stage_model."): v for k, v in tiny_state_dict().items()
           if k.startswith("first_stage_model.")}
    vae = {k: (v[:, :, 0, 0] if ".attn_1." in k and v.ndim == 4 else v) for k, v in vae.items()}
    save_file(vae, str(tmp_path / "vae.safetensors"))
    assert load_vae_file(tmp_path / "vae.safetensors", torch.float32) is not None


def test_not_a_vae_is_refused(tmp_path):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "vae.safetensors"))
    with pytest.raises(CheckpointError, match="not a VAE"):
        load_vae_file(tmp_path / "vae.safetensors", torch.float32)


def test_taesd_decoder_file_in_madebyollin_layout(tmp_path, tiny_path):
    decoder = TAESD().decoder.state_dict()
    save_file(decoder, str(tmp_path / "taesd_decoder.safetensors"))
    assert torch.equal(load_taesd_file(tmp_path / "taesd_decoder.safetensors").decoder.state_dict()["1.weight"],
                       decoder["1.weight"])
    model = load_checkpoint(tiny_path, taesd_path=tmp_path / "taesd_decoder.safetensors")
    assert model.taesd is not None


def test_weights_that_do_not_fit_name_the_key(tmp_path):
    sd = tiny_state_dict()
    del sd["model.diffusion_model.out.2.bias"]
    save_file(sd, str(tmp_path / "broken.safetensors"), metadata={"sdstudio.config": '{"family": "demo"}'})
    with pytest.raises(CheckpointError, match="out.2.bias"):
        load_checkpoint(tmp_path / "broken.safetensors")


def test_missing_text_encoder_is_refused(tmp_path):
    sd = {k: v for k, v in tiny_state_dict().items() if not k.startswith("cond_stage_model.")}
    save_file(sd, str(tmp_path / "notext.safetensors"), metadata={"sdstudio.config": '{"family": "demo"}'})
    with pytest.raises(CheckpointError, match="lacks its text encoder"):
        load_checkpoint(tmp_path / "notext.safetensors")


def test_missing_vae_asks_for_a_vae_file(tmp_path):
    sd = {k: v for k, v in tiny_state_dict().items() if not k.startswith("first_stage_model.")}
    save_file(sd, str(tmp_path / "novae.safetensors"), metadata={"sdstudio.config": '{"family": "demo"}'})
    with pytest.raises(CheckpointError, match="choose a separate VAE"):
        load_checkpoint(tmp_path / "novae.safetensors")


def test_ckpt_is_refused_by_default(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match="refuses them by default"):
        load_checkpoint(tmp_path / "m.ckpt")


def test_ckpt_loads_weights_only_when_the_user_opts_in(tmp_path):
    sd = tiny_state_dict()
    torch.save({"state_dict": sd}, tmp_path / "m.ckpt")
    (tmp_path / "m.yaml").write_text("model:\n  params:\n    parameterization: eps\n")
    # Pickles carry no metadata: the demo family's settings cannot be read, so it is refused as unknown...
    with pytest.raises(CheckpointError, match="context 32"):
        load_checkpoint(tmp_path / "m.ckpt", allow_pickle=True)


def test_ckpt_of_a_known_family_is_detected_from_its_shapes(tmp_path):
    from sdstudio.engine.detect import detect
    from sdstudio.engine.weights import open_pickle_checkpoint
    from tests.engine.family_shapes import checkpoint_shapes

    shapes = {k: v for k, v in checkpoint_shapes("sd1").items() if k.startswith("model.diffusion_model.")
              and ("input_blocks.0.0" in k or "attn2.to_k" in k)}
    torch.save({k: torch.zeros(v, dtype=torch.float16) for k, v in shapes.items()}, tmp_path / "m.ckpt")
    desc = detect(open_pickle_checkpoint(tmp_path / "m.ckpt"))
    assert (desc.family, desc.dtype, desc.missing) == ("sd1", "fp16", ("VAE", "text encoder"))


def test_separate_files_are_part_of_the_reported_progress(tmp_path, tiny_path):
    vae = {k.removeprefix("first_stage_model."): v for k, v in tiny_state_dict(seed=5).items()
           if k.startswith("first_stage_model.")}
    save_file(vae, str(tmp_path / "vae.safetensors"))
    save_file(TAESD().decoder.state_dict(), str(tmp_path / "taesd_decoder.safetensors"))
    calls = []
    model = load_checkpoint(tiny_path, vae_path=tmp_path / "vae.safetensors",
                            taesd_path=tmp_path / "taesd_decoder.safetensors",
                            progress=lambda stage, fraction: calls.append((stage, fraction)))
    assert set(model.placements) == {"unet", "text", "vae", "taesd"}
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    last_before_ready = [f for s, f in calls if s == "preview decoder"][-1]
    assert last_before_ready > 0.99  # the byte total counted the separate files, no jump at the end


@pytest.mark.parametrize("key", [
    "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
    "model.diffusion_model.out.2.weight",
    "first_stage_model.decoder.conv_in.weight",
    "first_stage_model.encoder.conv_in.weight",
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
])
def test_a_one_dimensional_tensor_where_a_matrix_or_conv_belongs_is_one_line_refusal(tmp_path, key):
    sd = tiny_state_dict()
    sd[key] = sd[key].reshape(-1)
    p = tmp_path / "flat.safetensors"
    save_file(sd, str(p), metadata={"sdstudio.config": json.dumps(TINY_CONFIG)})
    with pytest.raises(CheckpointError, match="^flat.safetensors: ") as info:
        load_checkpoint(p)
    assert "\n" not in str(info.value)
