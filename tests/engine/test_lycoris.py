"""LyCORIS LoHa / LoKr / full-diff deltas against peft's own LoHa and LoKr layers (same tensor names and
layouts as LyCORIS files), and against formulas written here where peft's convention differs."""

from __future__ import annotations

import pytest
import torch
from peft import LoHaConfig, LoKrConfig, inject_adapter_in_model
from torch import nn

from sdstudio.engine.errors import NetworkFileError
from sdstudio.engine.lycoris import LYCORIS_SUFFIXES, lycoris_deltas

TOL = 1e-5


class Host(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(48, 40)
        self.conv = nn.Conv2d(16, 24, 3, padding=1)
        self.point = nn.Conv2d(16, 24, 1)


def peft_layer(config, target: str):
    """A peft adapter layer on `target` with random (not zero-initialised) factors, and its file tensors."""
    torch.manual_seed(hash((type(config).__name__, target, config.r)) % 1000)
    host = inject_adapter_in_model(config, Host())
    layer = getattr(host, target)
    with torch.no_grad():  # textured factors with varied magnitudes, so a wrong index order shows
        for name, param in layer.named_parameters():
            if ".default" in name or name.endswith("default"):
                param.copy_(torch.randn_like(param) * (0.5 + torch.rand_like(param)))
    parts = {}
    for name, param in layer.named_parameters():
        suffix, _, adapter = name.rpartition(".")
        if adapter == "default":
            parts[suffix] = param.detach().clone()
    return layer, parts


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.detach(), ref.detach()
    return float((ours - ref).abs().max() / ref.abs().max())


def apply_weight(parts, weight):
    return lycoris_deltas(parts)["weight"](weight.detach().float())


@pytest.mark.parametrize("target,tucker", [("lin", False), ("conv", False), ("point", False), ("conv", True),
                                           ("point", True)])  # peft keeps a 1x1 conv flat even when asked
def test_loha_matches_peft(target, tucker):
    config = LoHaConfig(r=4, alpha=7, target_modules=[target], init_weights=False,
                        use_effective_conv2d=tucker)
    layer, parts = peft_layer(config, target)
    assert ("hada_t1" in parts) == (tucker and target == "conv")
    parts["alpha"] = torch.tensor(7.0)
    ref = layer.get_delta_weight("default")  # peft: alpha / r, the LyCORIS convention
    ours = apply_weight(parts, layer.base_layer.weight)
    assert ours.shape == layer.base_layer.weight.shape
    assert relative_error(ours, ref) < TOL


@pytest.mark.parametrize("target,r,both,tucker", [
    ("lin", 2, False, False),   # w1 full, w2 low-rank: scale alpha / w2 rank
    ("lin", 1, True, False),    # both low-rank
    ("conv", 2, False, False),  # conv, w2 low-rank flattened [b, d*kh*kw]
    ("conv", 2, False, True),   # conv, w2 in Tucker form with lokr_t2
    ("conv", 1, True, True),
    ("point", 2, False, False),
])
def test_lokr_matches_peft_when_a_factor_is_low_rank(target, r, both, tucker):
    config = LoKrConfig(r=r, alpha=5, target_modules=[target], init_weights=False, decompose_both=both,
                        decompose_factor=4, use_effective_conv2d=tucker)
    layer, parts = peft_layer(config, target)
    assert "lokr_w2_b" in parts
    assert ("lokr_w1_b" in parts) == both
    assert ("lokr_t2" in parts) == (tucker and target == "conv")
    parts["alpha"] = torch.tensor(5.0)
    ref = layer.get_delta_weight("default")
    ours = apply_weight(parts, layer.base_layer.weight)
    assert relative_error(ours, ref) < TOL


@pytest.mark.parametrize("target", ["lin", "conv"])
def test_lokr_both_full_ignores_alpha(target):
    """peft always scales LoKr by alpha / r; LyCORIS (and A1111, ComfyUI) ignore alpha when both factors are
    full, since LyCORIS trains that case at scale 1. So the reference here is kron written out by index."""
    config = LoKrConfig(r=64, alpha=5, target_modules=[target], init_weights=False, decompose_factor=4)
    layer, parts = peft_layer(config, target)
    assert set(parts) == {"lokr_w1", "lokr_w2"}
    parts["alpha"] = torch.tensor(5.0)
    w1, w2 = parts["lokr_w1"], parts["lokr_w2"]
    (a, c), (b, d) = w1.shape, w2.shape[:2]
    ref = torch.einsum("ac,bd...->abcd...", w1, w2).reshape(a * b, c * d, *w2.shape[2:])
    ours = apply_weight(parts, layer.base_layer.weight)
    assert relative_error(ours, ref.reshape(ours.shape)) < TOL
    assert relative_error(layer.get_delta_weight("default"), ref * 5 / 64) < TOL  # peft's convention differs


def test_lokr_w1_low_rank_w2_full_uses_w1_rank():
    """A factor layout peft never makes (w1 low-rank, w2 full); the rank is then lokr_w1_b's."""
    g = torch.Generator().manual_seed(3)
    w1a, w1b = torch.randn(4, 3, generator=g), torch.randn(3, 6, generator=g)
    w2 = torch.randn(5, 2, generator=g)
    parts = {"lokr_w1_a": w1a, "lokr_w1_b": w1b, "lokr_w2": w2, "alpha": torch.tensor(1.5)}
    ours = apply_weight(parts, torch.zeros(20, 12))
    ref = torch.einsum("ac,bd->abcd", w1a @ w1b, w2).reshape(20, 12) * 1.5 / 3
    assert relative_error(ours, ref) < TOL


def test_alpha_absent_means_scale_one_and_half_precision_is_read_in_float32():
    g = torch.Generator().manual_seed(4)
    parts = {k: torch.randn(shape, generator=g).half()
             for k, shape in (("hada_w1_a", (10, 3)), ("hada_w1_b", (3, 8)), ("hada_w2_a", (10, 3)),
                              ("hada_w2_b", (3, 8)))}
    ours = apply_weight(parts, torch.zeros(10, 8))
    p = {k: v.float() for k, v in parts.items()}
    ref = (p["hada_w1_a"] @ p["hada_w1_b"]) * (p["hada_w2_a"] @ p["hada_w2_b"])
    assert ours.dtype == torch.float32
    assert relative_error(ours, ref) < TOL
    scaled = apply_weight({**parts, "alpha": torch.tensor([6.0]).half()}, torch.zeros(10, 8))
    assert relative_error(scaled, ref * 2) < TOL


def test_full_diff_and_bias_diff_unscaled():
    g = torch.Generator().manual_seed(5)
    diff, diff_b = torch.randn(24, 16, 3, 3, generator=g), torch.randn(24, generator=g)
    deltas = lycoris_deltas({"diff": diff, "diff_b": diff_b, "alpha": torch.tensor(2.0)})
    assert set(deltas) == {"weight", "bias"}
    assert torch.equal(deltas["weight"](torch.zeros(24, 16, 3, 3)), diff)
    assert torch.equal(deltas["bias"](torch.zeros(24)), diff_b)
    assert set(lycoris_deltas({"diff_b": diff_b})) == {"bias"}


def test_suffix_list_is_the_interface():
    assert LYCORIS_SUFFIXES == {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
                                "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b",
                                "lokr_t2", "diff", "diff_b"}


def _loha(out=10, inner=8, r=3):
    return {"hada_w1_a": torch.randn(out, r), "hada_w1_b": torch.randn(r, inner),
            "hada_w2_a": torch.randn(out, r), "hada_w2_b": torch.randn(r, inner)}


@pytest.mark.parametrize("parts,message", [
    ({**_loha(), "hada_w1_b": torch.randn(2, 8)}, "do not multiply"),
    ({**_loha(), "hada_w2_a": torch.randn(9, 3)}, "differ in shape"),
    ({k: v for k, v in _loha().items() if k != "hada_w2_b"}, "hada_w2_b missing"),
    ({**_loha(), "hada_t1": torch.randn(3, 3, 3, 3)}, "without its pair"),
    ({"hada_t1": torch.randn(3, 2, 3, 3), "hada_t2": torch.randn(3, 3, 3, 3), "hada_w1_a": torch.randn(3, 10),
      "hada_w1_b": torch.randn(3, 8), "hada_w2_a": torch.randn(3, 10), "hada_w2_b": torch.randn(3, 8)},
     "Tucker"),
    ({"lokr_w1": torch.randn(2, 2), "lokr_w2_a": torch.randn(5, 2)}, "lokr_w2_b missing"),
    ({"lokr_w1": torch.randn(2, 2, 1), "lokr_w2": torch.randn(5, 4)}, "unusable shapes"),
    ({**_loha(), "lokr_w1": torch.randn(2, 2)}, "mixes"),
    ({**_loha(), "dora_scale": torch.randn(10, 1)}, "dora_scale"),
    ({**_loha(), "alpha": torch.ones(2)}, "one number"),
    ({"alpha": torch.tensor(1.0)}, "no weight tensors"),
])
def test_inconsistent_modules_are_refused(parts, message):
    with pytest.raises(NetworkFileError, match=message):
        lycoris_deltas(parts)


@pytest.mark.parametrize("parts,weight", [
    (_loha(10, 8), torch.zeros(10, 9)),                                  # wrong in-features
    (_loha(10, 8), torch.zeros(8, 10)),                                  # transposed
    (_loha(24, 16 * 9), torch.zeros(24, 16, 3, 1)),                      # kernel of another size
    ({"lokr_w1": torch.randn(2, 3), "lokr_w2": torch.randn(4, 5)}, torch.zeros(8, 16)),
    ({"diff": torch.randn(24, 16, 3, 3)}, torch.zeros(24, 16, 1, 9)),
    ({"diff_b": torch.randn(24)}, torch.zeros(23)),
])
def test_delta_for_another_weight_shape_is_refused(parts, weight):
    deltas = lycoris_deltas(parts)
    fn = deltas.get("weight") or deltas["bias"]
    with pytest.raises(NetworkFileError, match="another model"):
        fn(weight)


def test_conv_loha_flattened_reshapes_to_the_kernel():
    parts = _loha(24, 16 * 9)
    delta = apply_weight(parts, torch.zeros(24, 16, 3, 3))
    flat = (parts["hada_w1_a"] @ parts["hada_w1_b"]) * (parts["hada_w2_a"] @ parts["hada_w2_b"])
    assert torch.equal(delta, flat.reshape(24, 16, 3, 3))


def test_lycoris_file_patches_a_loaded_model(tmp_path):
    """A file mixing LoHa (plain and Tucker), LoKr and full diffs (weight and bias), read by lora_file and
    applied at per-component strengths: each weight moves by strength × the formula written out here."""
    from safetensors.torch import save_file

    from sdstudio.engine.checkpoint import load_checkpoint
    from sdstudio.engine.lora_file import lora_patch_set, read_lora
    from tests.engine.lora_files import tiny_family_checkpoint

    g = torch.Generator().manual_seed(9)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.3

    q, conv1, conv2 = ("input_blocks.1.1.transformer_blocks.0.attn1.to_q", "input_blocks.1.0.in_layers.2",
                       "input_blocks.1.0.out_layers.3")
    fc1 = "text_model.encoder.layers.0.mlp.fc1"
    t = {}
    t |= {f"lora_unet_{q.replace('.', '_')}.{k}": v for k, v in {
        "hada_w1_a": r(32, 2), "hada_w1_b": r(2, 32), "hada_w2_a": r(32, 2), "hada_w2_b": r(2, 32),
        "alpha": torch.tensor(1.0)}.items()}
    t |= {f"lora_unet_{conv1.replace('.', '_')}.{k}": v for k, v in {
        "lokr_w1": r(4, 4), "lokr_w2_a": r(8, 2), "lokr_w2_b": r(2, 8 * 9),
        "alpha": torch.tensor(3.0)}.items()}
    t |= {f"lora_unet_{conv2.replace('.', '_')}.{k}": v for k, v in {
        "hada_t1": r(2, 2, 3, 3), "hada_w1_a": r(2, 32), "hada_w1_b": r(2, 32), "hada_t2": r(2, 2, 3, 3),
        "hada_w2_a": r(2, 32), "hada_w2_b": r(2, 32)}.items()}  # no alpha: scale 1
    t |= {f"lora_te_{fc1.replace('.', '_')}.{k}": v for k, v in {"diff": r(64, 32), "diff_b": r(64)}.items()}
    save_file({k: v.contiguous() for k, v in t.items()}, str(tmp_path / "lyco.safetensors"))

    def part(module, suffix):
        return t[f"{module}.{suffix}"].double()

    def tucker(tc, wa, wb):
        return torch.einsum("ijhw,ip,jq->pqhw", tc, wa, wb)

    nq, n1, n2, nf = (f"lora_unet_{q.replace('.', '_')}", f"lora_unet_{conv1.replace('.', '_')}",
                      f"lora_unet_{conv2.replace('.', '_')}", f"lora_te_{fc1.replace('.', '_')}")
    lokr_w2 = (part(n1, "lokr_w2_a") @ part(n1, "lokr_w2_b")).reshape(8, 8, 3, 3)
    expected = {
        "model.diffusion_model." + q + ".weight":
            0.7 * 0.5 * (part(nq, "hada_w1_a") @ part(nq, "hada_w1_b"))
            * (part(nq, "hada_w2_a") @ part(nq, "hada_w2_b")),
        "model.diffusion_model." + conv1 + ".weight":
            0.7 * 1.5 * torch.einsum("ac,bdhw->abcdhw", part(n1, "lokr_w1"), lokr_w2).reshape(32, 32, 3, 3),
        "model.diffusion_model." + conv2 + ".weight":
            0.7 * tucker(part(n2, "hada_t1"), part(n2, "hada_w1_a"), part(n2, "hada_w1_b"))
            * tucker(part(n2, "hada_t2"), part(n2, "hada_w2_a"), part(n2, "hada_w2_b")),
        "text.0." + fc1 + ".weight": 0.4 * part(nf, "diff"),
        "text.0." + fc1 + ".bias": 0.4 * part(nf, "diff_b"),
    }
    model = load_checkpoint(tiny_family_checkpoint(tmp_path / "base.safetensors", "sd1"))
    before = {k: model.weights.parameter(k).detach().clone() for k in expected}
    model.apply_patches(lora_patch_set(read_lora(tmp_path / "lyco.safetensors"), model, te=0.4, unet=0.7))
    for key, delta in expected.items():
        moved = model.weights.parameter(key).detach().double() - before[key].double()
        assert float((moved - delta).abs().max() / delta.abs().max()) < TOL, key


def test_delta_shapes_are_known_before_anything_is_computed():
    """`shape` and `check` let a loader refuse a file for another model when it is read, not applied."""
    cases = [
        (_loha(24, 16 * 9), (24, 16 * 9)),
        ({"hada_t1": torch.randn(3, 3, 3, 3), "hada_t2": torch.randn(3, 3, 3, 3),
          "hada_w1_a": torch.randn(3, 24), "hada_w1_b": torch.randn(3, 16),
          "hada_w2_a": torch.randn(3, 24), "hada_w2_b": torch.randn(3, 16)},
         (24, 16, 3, 3)),
        ({"lokr_w1": torch.randn(2, 4), "lokr_w2_a": torch.randn(12, 2), "lokr_w2_b": torch.randn(2, 4 * 9)},
         (24, 144)),
        ({"lokr_w1_a": torch.randn(2, 1), "lokr_w1_b": torch.randn(1, 4), "lokr_t2": torch.randn(1, 1, 3, 3),
          "lokr_w2_a": torch.randn(1, 12), "lokr_w2_b": torch.randn(1, 4)}, (24, 16, 3, 3)),
        ({"diff": torch.randn(24, 16, 3, 3)}, (24, 16, 3, 3)),
    ]
    for parts, shape in cases:
        fn = lycoris_deltas(parts)["weight"]
        assert fn.shape == shape
        fn.check((24, 16, 3, 3))
        assert fn(torch.zeros(24, 16, 3, 3)).shape == (24, 16, 3, 3)
        wrong = [(24, 16, 3, 2), (16, 24, 3, 3)] + ([(24, 16, 1, 9)] if len(shape) == 4 else [])
        for weight in wrong:  # a flattened ΔW cannot tell a 3x3 kernel from a 1x9 one; a 4-D one can
            with pytest.raises(NetworkFileError, match="another model"):
                fn.check(weight)


def test_lycoris_module_for_another_shape_is_refused_when_the_patch_set_is_built(tmp_path):
    from safetensors.torch import save_file

    from sdstudio.engine.checkpoint import load_checkpoint
    from sdstudio.engine.lora_file import lora_patch_set, read_lora
    from tests.engine.lora_files import tiny_family_checkpoint

    module = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"  # a 32x32 weight
    save_file({f"{module}.lokr_w1": torch.randn(4, 4), f"{module}.lokr_w2": torch.randn(8, 10)},
              str(tmp_path / "wide.safetensors"))
    model = load_checkpoint(tiny_family_checkpoint(tmp_path / "base.safetensors", "sd1"))
    with pytest.raises(NetworkFileError, match=rf"wide.safetensors.*{module}.*\(32, 40\).*\(32, 32\)"):
        lora_patch_set(read_lora(tmp_path / "wide.safetensors"), model)


@pytest.mark.parametrize("config", [
    LoHaConfig(r=4, alpha=3, init_weights=False, use_effective_conv2d=True,
               target_modules=r".*(attn1\.to_q|attn2\.to_k|ff\.net\.2|resnets\.0\.conv1|proj_in|conv_shortcut)"),
    LoKrConfig(r=2, alpha=3, init_weights=False, decompose_factor=4, use_effective_conv2d=True,
               target_modules=r".*(attn1\.to_v|attn2\.to_out\.0|ff\.net\.0\.proj|resnets\.1\.conv2|"
                              r"downsamplers\.0\.conv)"),
], ids=["loha", "lokr"])
def test_lycoris_file_on_a_model_equals_peft_merged_into_diffusers(tmp_path, config):
    """peft's LoHa/LoKr adapters on a tiny diffusers UNet, merged by peft; the same factors written as a kohya
    LyCORIS file and applied by us give the same weights (LoKr here always has a low-rank factor, where peft's
    and LyCORIS's scales agree)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from safetensors.torch import save_file

    from tests.engine import lora_reference as lr
    from tests.engine.lora_files import tiny_family_checkpoint
    from tests.engine.test_lora_equivalence import ours, tiny_pipeline

    path = tiny_family_checkpoint(tmp_path / "base.safetensors", "sd1", seed=6)
    unet = inject_adapter_in_model(config, tiny_pipeline(path, "sd1").unet)
    torch.manual_seed(11)
    tensors = {}
    with torch.no_grad():
        for name, module in unet.named_modules():
            if not isinstance(module, BaseTunerLayer):
                continue
            for pname, param in module.named_parameters():
                suffix, _, adapter = pname.rpartition(".")
                if adapter == "default":
                    param.copy_(torch.randn_like(param) * 0.3)
                    tensors[f"lora_unet_{name.replace('.', '_')}.{suffix}"] = param.detach().clone()
            tensors[f"lora_unet_{name.replace('.', '_')}.alpha"] = torch.tensor(float(config.alpha))
            module.merge()
    assert any(k.endswith(("hada_t1", "lokr_t2")) for k in tensors), "the Tucker form is not exercised"
    save_file(tensors, str(tmp_path / "lyco.safetensors"))
    merged = {k.replace(".base_layer", ""): v for k, v in unet.state_dict().items()}
    patched, shapes, _ = ours(path, tmp_path / "lyco.safetensors")
    names = lr.diffusers_names(shapes, unet.config)
    assert len(patched) == sum(k.endswith(".alpha") for k in tensors)
    for target, weight in patched.items():
        theirs = merged[names[target.removeprefix("model.diffusion_model.")]]
        assert float((weight - theirs).abs().max() / theirs.abs().max()) < TOL, target
