import json
import re
import time
from pathlib import Path

import pytest

from sdstudio.cli import main
from sdstudio.engine.detect import detect
from sdstudio.engine.errors import CheckpointError, UnsupportedModelError
from sdstudio.engine.safetensors_file import read_header
from tests.engine.family_shapes import checkpoint_shapes
from tests.engine.st_files import write_header_only

FAMILIES = [
    ("sd1", 4, "SD 1.x", False),
    ("sd1", 9, "SD 1.x", True),
    ("sd2", 4, "SD 2.x", False),
    ("sdxl", 4, "SDXL", False),
    ("sdxl", 9, "SDXL", True),
]


@pytest.fixture(scope="module")
def family_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {
        (fam, ch): write_header_only(root / f"{fam}-{ch}.safetensors", checkpoint_shapes(fam, ch))
        for fam, ch, _, _ in FAMILIES
    }


@pytest.mark.parametrize("family,channels,label,inpainting", FAMILIES)
def test_each_family_is_detected_from_shapes(family_files, family, channels, label, inpainting):
    desc = detect(read_header(family_files[family, channels]))
    assert (desc.family, desc.family_label, desc.inpainting) == (family, label, inpainting)
    assert desc.missing == () and desc.dtype == "fp16" and desc.vae_downscale == 8
    assert desc.scale_factor == {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025}[family]


def test_parameter_counts_match_the_published_sizes(family_files):
    sd15 = detect(read_header(family_files["sd1", 4])).params
    assert (
        round(sd15["unet"] / 1e6) == 860
        and round(sd15["vae"] / 1e6) == 84
        and round(sd15["text"] / 1e6) == 123
    )
    sdxl = detect(read_header(family_files["sdxl", 4])).params
    assert sdxl["unet"] == 2_567_463_684


def bytes_read_by_this_process() -> int:
    """Linux's read() byte count for this process (/proc/self/io rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("/proc/self/io has no rchar line")


@pytest.mark.skipif(not Path("/proc/self/io").is_file(), reason="counts bytes read through Linux's /proc")
def test_inspect_json_reads_only_the_header_of_a_multi_gigabyte_file(family_files, capsys):
    path = family_files["sdxl", 4]
    assert path.stat().st_size > 6e9
    before = bytes_read_by_this_process()
    assert main(["inspect", str(path), "--json"]) == 0
    read = bytes_read_by_this_process() - before
    assert read < 16 * 2**20, f"inspect read {read} bytes of a {path.stat().st_size}-byte file"
    out = json.loads(capsys.readouterr().out)
    assert out["family"] == "sdxl" and out["prediction"] == "eps"


@pytest.mark.perf
def test_inspect_json_is_fast_on_a_multi_gigabyte_file(family_files):
    path = family_files["sdxl", 4]
    t0 = time.perf_counter()
    assert main(["inspect", str(path), "--json"]) == 0
    seconds = time.perf_counter() - t0
    print(f"\ninspect --json of a {path.stat().st_size / 1e9:.1f} GB SDXL header: {seconds * 1000:.0f} ms "
          "(target 1 s)")
    assert seconds < 5.0


def test_inspect_human_output_names_family(family_files, capsys):
    assert main(["inspect", str(family_files["sd1", 9])]) == 0
    assert "SD 1.x inpainting" in capsys.readouterr().out


def _variant(tmp_path, name, family="sd1", drop=(), add=None, metadata=None):
    shapes = (
        {k: v for k, v in checkpoint_shapes(family).items() if not k.startswith(drop)}
        if drop
        else checkpoint_shapes(family)
    )
    shapes |= add or {}
    return write_header_only(tmp_path / name, shapes, metadata=metadata)


def test_sdxl_refiner_is_named(tmp_path):
    shapes = checkpoint_shapes("sdxl")
    shapes["model.diffusion_model.label_emb.0.0.weight"] = (1536, 2560)
    p = write_header_only(tmp_path / "refiner.safetensors", shapes)
    with pytest.raises(UnsupportedModelError, match=r"SDXL refiner \(adm 2560\) is not supported"):
        detect(read_header(p))


@pytest.mark.parametrize(
    "keys,what",
    [
        ({"model.diffusion_model.joint_blocks.0.x.weight": (4, 4)}, "Stable Diffusion 3"),
        ({"double_blocks.0.img_attn.qkv.weight": (4, 4)}, "FLUX"),
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 4)}, "LoRA"),
        ({"down_blocks.0.resnets.0.conv1.weight": (4, 4)}, "diffusers-format"),
        ({"emb_params": (2, 768)}, "textual-inversion"),
    ],
)
def test_known_foreign_files_are_named(tmp_path, keys, what):
    p = write_header_only(tmp_path / "x.safetensors", keys)
    with pytest.raises(UnsupportedModelError, match=what):
        detect(read_header(p))


def test_unknown_architecture_says_what_it_saw(tmp_path):
    p = write_header_only(tmp_path / "x.safetensors", {"some.weight": (3, 3), "other.bias": (3,)})
    with pytest.raises(UnsupportedModelError, match=r"unknown architecture.*2 tensors"):
        detect(read_header(p))


def test_standalone_vae_is_named(tmp_path):
    p = write_header_only(
        tmp_path / "vae.safetensors",
        {"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_in.weight": (512, 4, 3, 3)},
    )
    with pytest.raises(CheckpointError, match="standalone VAE"):
        detect(read_header(p))


def test_unknown_context_width_is_refused_with_numbers(tmp_path):
    shapes = {
        k: ((v[0], 4096) if k.endswith("attn2.to_k.weight") else v)
        for k, v in checkpoint_shapes("sd1").items()
    }
    p = write_header_only(tmp_path / "x.safetensors", shapes)
    with pytest.raises(UnsupportedModelError, match="context 4096"):
        detect(read_header(p))


def test_unmatched_shapes_name_every_family_of_the_table(tmp_path):
    shapes = {k: ((v[0], 4096) if k.endswith("attn2.to_k.weight") else v)
              for k, v in checkpoint_shapes("sd1").items()}
    p = write_header_only(tmp_path / "x.safetensors", shapes)
    table = r"SD 1.x \(768\), SD 2.x \(1024\), SDXL \(2048 \+ adm 2816\)"
    with pytest.raises(UnsupportedModelError, match=table):
        detect(read_header(p))


def test_metadata_naming_an_unknown_family_is_refused(tmp_path):
    p = _variant(tmp_path, "x.safetensors", metadata={"sdstudio.config": '{"family": "sd9"}'})
    with pytest.raises(UnsupportedModelError, match="sdstudio.config: unknown model family 'sd9'"):
        detect(read_header(p))


def test_metadata_family_wins_over_shapes_and_sets_the_scale(tmp_path):
    config = '{"family": "demo", "scale_factor": 0.5, "default_size": 96}'
    desc = detect(read_header(_variant(tmp_path, "x.safetensors", metadata={"sdstudio.config": config})))
    assert (desc.family, desc.scale_factor, desc.default_size) == ("demo", 0.5, 96)


def test_missing_vae_is_reported(tmp_path):
    p = _variant(tmp_path, "novae.safetensors", drop=("first_stage_model.",))
    assert detect(read_header(p)).missing == ("VAE",)


def test_missing_text_encoder_is_reported(tmp_path):
    p = _variant(tmp_path, "notext.safetensors", drop=("cond_stage_model.",))
    assert detect(read_header(p)).missing == ("text encoder",)


@pytest.mark.parametrize("source", ["override", "yaml", "metadata", "v_pred key"])
def test_v_prediction_sources(tmp_path, source):
    meta = {"modelspec.prediction_type": "v"} if source == "metadata" else None
    add = {"v_pred": (0,)} if source == "v_pred key" else None
    p = _variant(tmp_path, "sd2.safetensors", family="sd2", metadata=meta, add=add)
    if source == "yaml":
        p.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    desc = detect(read_header(p), prediction="v" if source == "override" else "")
    assert (desc.prediction, desc.prediction_source) == ("v", source)


def test_sd2_without_hint_defaults_to_eps_with_a_note(tmp_path):
    desc = detect(read_header(_variant(tmp_path, "sd2.safetensors", family="sd2")))
    assert desc.prediction == "eps" and any("v-prediction" in n or "predict v" in n for n in desc.notes)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"not a model", "too short|not a safetensors"),
        (b"\x80\x02" + b"\0" * 100, "pickled"),
    ],
)
def test_inspect_refuses_bad_files_with_one_line(tmp_path, capsys, content, message):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    assert main(["inspect", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1

    assert re.search(message, err)


def test_inspect_refuses_ckpt_without_opening_it(tmp_path, capsys):
    p = tmp_path / "model.ckpt"
    p.write_bytes(b"\x80\x02whatever")
    assert main(["inspect", str(p)]) == 2
    assert "pickle" in capsys.readouterr().err


@pytest.mark.parametrize("config,message", [
    ('{"family": "demo", "scale_factor": NaN}', "not valid JSON"),
    ('{"family": "demo", "scale_factor": 1e999}', "scale_factor to inf"),
    ('{"family": "demo", "scale_factor": "fast"}', "scale_factor to 'fast'"),
    ('{"family": "demo", "default_size": 65}', "default_size to 65"),
    ('{"family": "demo", "family": "sd1"}', "duplicate key 'family'"),
    ('{"family": ["demo"]}', "names its family with \\['demo'\\]"),
    ('{"family": "demo", "prediction": "x0"}', "prediction to 'x0'"),
    ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "nested more than"),
    ('{"family": "demo", "unet": {"num_heads": ' + "9" * 5000 + "}}", "not valid JSON"),
])
def test_bad_sdstudio_config_metadata_is_refused_naming_the_file(tmp_path, config, message):
    p = _variant(tmp_path, "meta.safetensors", metadata={"sdstudio.config": config})
    with pytest.raises(CheckpointError, match=message) as info:
        detect(read_header(p))
    assert str(info.value).startswith("meta.safetensors: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("key,shape", [
    ("model.diffusion_model.input_blocks.0.0.weight", (320,)),  # a 1-D tensor where a conv is expected
    ("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", (320, 768, 1)),
    ("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", (320, 0)),
])
def test_a_tensor_of_the_wrong_rank_is_refused_naming_it(tmp_path, key, shape):
    p = _variant(tmp_path, "rank.safetensors", add={key: shape})
    with pytest.raises(CheckpointError, match=re.escape(f"tensor {key!r} has shape {shape}")):
        detect(read_header(p))


def test_a_one_dimensional_label_emb_is_refused(tmp_path):
    p = _variant(tmp_path, "xl.safetensors", family="sdxl", add={"model.diffusion_model.label_emb.0.0.weight": (5,)})
    with pytest.raises(CheckpointError, match="label_emb.0.0.weight' has shape"):
        detect(read_header(p))
