import pytest
import torch
from safetensors.torch import save_file

from sdstudio.engine.vae import AutoencoderKL, VAEConfig
from sdstudio.training.warm_start import load_vae

CONFIG = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1)


def _save(tmp_path, vae, prefix="first_stage_model."):
    path = tmp_path / "model.safetensors"
    save_file({prefix + k: v.half().contiguous() for k, v in vae.state_dict().items()}, str(path))
    return path


def test_loads_the_shipped_weights(tmp_path):
    torch.manual_seed(0)
    source = AutoencoderKL(CONFIG)
    target = AutoencoderKL(CONFIG)
    load_vae(target, _save(tmp_path, source))
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items(), strict=True):
        assert torch.equal(a.half().float(), b), name


def test_refuses_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_vae(AutoencoderKL(CONFIG), tmp_path / "absent.safetensors")


def test_refuses_weights_of_another_shape_or_prefix(tmp_path):
    with pytest.raises(ValueError, match="no weights under"):
        load_vae(AutoencoderKL(CONFIG), _save(tmp_path, AutoencoderKL(CONFIG), prefix="vae."))
    other = AutoencoderKL(VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1))
    with pytest.raises((ValueError, RuntimeError)):
        load_vae(AutoencoderKL(CONFIG), _save(tmp_path, other))
