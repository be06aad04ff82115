"""The super-resolution networks behind ESRGAN-style upscaler files, and how a file's keys say which one.

- RRDBNet: Wang et al. 2018, "ESRGAN: Enhanced Super-Resolution Generative Adversarial Networks" (residual-in-
  residual dense blocks, residual scaling 0.2, nearest ×2 upsampling + conv per octave, LeakyReLU 0.2), and
  Wang et al. 2021, "Real-ESRGAN" (the same generator; ×2 and ×1 models first fold the image into channels
  with pixel-unshuffle). Two key layouts exist: the original ESRGAN repository's `model.N...` Sequential
  indices (most files in A1111's models/ESRGAN) and BasicSR's named modules (`conv_first`, `body.N.rdb1...`,
  Real-ESRGAN's releases, often wrapped in `params_ema`). Both load into one module; the old layout is
  renamed once, by rule, from the index arithmetic of the original Sequential.
- SRVGGNetCompact: Real-ESRGAN's small VGG-style model (realesr-general-x4v3, realesr-animevideov3): a plain
  conv/PReLU stack ending in pixel-shuffle, added to a nearest upsampling of the input.

We write these ourselves instead of depending on spandrel: spandrel requires torchvision (a 7.4 MB wheel,
19 MB installed, pinned to one torch version), while these two architectures cover the ESRGAN and
Real-ESRGAN files people use. Other architectures (SwinIR, HAT, DAT ...) are refused by name.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdstudio.engine.errors import CheckpointError


class DenseBlock(nn.Module):
    """Residual dense block: five 3×3 convs, each seeing the input and every earlier output."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        for i in range(5):
            setattr(self, f"conv{i + 1}", nn.Conv2d(nf + i * gc, gc if i < 4 else nf, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for i in range(1, 5):
            feats.append(F.leaky_relu(getattr(self, f"conv{i}")(torch.cat(feats, 1)), 0.2))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = DenseBlock(nf, gc), DenseBlock(nf, gc), DenseBlock(nf, gc)

    def forward(self, x: Tensor) -> Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """BasicSR's module names. `unshuffle` folds the input by that factor first (Real-ESRGAN ×2: 2, ×1: 4);
    the scale is 2**octaves / unshuffle."""

    def __init__(self, in_ch: int, out_ch: int, nf: int, gc: int, blocks: int, octaves: int, unshuffle: int = 1):
        super().__init__()
        self.unshuffle, self.octaves = unshuffle, octaves
        self.conv_first = nn.Conv2d(in_ch * unshuffle ** 2, nf, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(nf, gc) for _ in range(blocks)))
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        for i in range(octaves):
            setattr(self, f"conv_up{i + 1}", nn.Conv2d(nf, nf, 3, 1, 1))
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_ch, 3, 1, 1)

    @property
    def scale(self) -> float:
        return 2 ** self.octaves / self.unshuffle

    def forward(self, x: Tensor) -> Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(self.octaves):
            feat = F.leaky_relu(getattr(self, f"conv_up{i + 1}")(F.interpolate(feat, scale_factor=2.0)), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact model: `body` alternates conv and PReLU (keys body.0, body.1, ...), the last conv
    makes out_ch·scale² channels for pixel-shuffle, and the nearest-upsampled input is added."""

    def __init__(self, in_ch: int, out_ch: int, nf: int, convs: int, scale: int) -> None:
        super().__init__()
        self.upscale = scale
        layers: list[nn.Module] = [nn.Conv2d(in_ch, nf, 3, 1, 1), nn.PReLU(nf)]
        for _ in range(convs):
            layers += [nn.Conv2d(nf, nf, 3, 1, 1), nn.PReLU(nf)]
        layers.append(nn.Conv2d(nf, out_ch * scale ** 2, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    @property
    def scale(self) -> float:
        return float(self.upscale)

    def forward(self, x: Tensor) -> Tensor:
        out = F.pixel_shuffle(self.body(x), self.upscale)
        return out + F.interpolate(x, scale_factor=float(self.upscale), mode="nearest")


# The original ESRGAN Sequential: [0] conv_first, [1] shortcut(sub = blocks..., trunk conv), then per octave
# [upsample, conv, lrelu] (convs at 3, 6, 9 ...), then conv_hr, lrelu, conv_last.
_OLD_BLOCK = re.compile(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_TRUNK = re.compile(r"model\.1\.sub\.(\d+)\.(weight|bias)$")
_OLD_TOP = re.compile(r"model\.(\d+)\.(weight|bias)$")


def from_old_layout(sd: dict[str, Tensor], name: str) -> dict[str, Tensor]:
    """The original ESRGAN repository's `model.N` keys renamed to BasicSR's, by the Sequential's arithmetic."""
    out: dict[str, Tensor] = {}
    tops: dict[int, dict[str, Tensor]] = {}
    for key, t in sd.items():
        if m := _OLD_BLOCK.match(key):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = t
        elif m := _OLD_TRUNK.match(key):
            out[f"conv_body.{m[2]}"] = t
        elif m := _OLD_TOP.match(key):
            tops.setdefault(int(m[1]), {})[m[2]] = t
        else:
            raise CheckpointError(f"{name}: key {key!r} is not part of an ESRGAN (RRDBNet) model")
    indices = sorted(tops)
    if len(indices) < 3 or indices[0] != 0:
        raise CheckpointError(f"{name}: an ESRGAN model needs its first conv and two final convs (model.0, ...)")
    octaves = len(indices) - 3
    expected = [0] + [3 * (i + 1) for i in range(octaves)] + [3 * octaves + 2, 3 * octaves + 4]
    if indices != expected:
        raise CheckpointError(f"{name}: ESRGAN layer indices {indices} do not match any upscale factor "
                              f"(expected {expected})")
    names = ["conv_first"] + [f"conv_up{i + 1}" for i in range(octaves)] + ["conv_hr", "conv_last"]
    for index, new in zip(indices, names, strict=True):
        for kind, t in tops[index].items():
            out[f"{new}.{kind}"] = t
    return out


def _conv_weight(sd: dict[str, Tensor], key: str, name: str) -> Tensor:
    t = sd.get(key)
    if not isinstance(t, Tensor) or t.dim() != 4:
        raise CheckpointError(f"{name}: {key} is missing or is not a conv weight")
    return t


def build_rrdbnet(sd: dict[str, Tensor], name: str) -> RRDBNet:
    """An RRDBNet shaped by a BasicSR-layout state dict (sizes read from the weights), with the weights loaded."""
    first = _conv_weight(sd, "conv_first.weight", name)
    last = _conv_weight(sd, "conv_last.weight", name)
    grow = _conv_weight(sd, "body.0.rdb1.conv1.weight", name)
    nf, gc, out_ch = first.shape[0], grow.shape[0], last.shape[0]
    blocks = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    octaves = len({k.split(".")[0] for k in sd if re.match(r"conv_up\d+\.", k)})
    unshuffle = {out_ch: 1, out_ch * 4: 2, out_ch * 16: 4}.get(first.shape[1])
    if unshuffle is None:
        raise CheckpointError(f"{name}: conv_first takes {first.shape[1]} channels for a {out_ch}-channel image; "
                              "not an ESRGAN layout SD Studio knows")
    net = RRDBNet(out_ch, out_ch, nf, gc, blocks, octaves, unshuffle)
    _load(net, sd, name)
    return net


def build_compact(sd: dict[str, Tensor], name: str) -> SRVGGNetCompact:
    indices = sorted(int(k.split(".")[1]) for k in sd if re.match(r"body\.\d+\.weight$", k))
    first = _conv_weight(sd, "body.0.weight", name)
    last = _conv_weight(sd, f"body.{indices[-1]}.weight", name)
    nf, in_ch = first.shape[0], first.shape[1]
    scale = round((last.shape[0] / in_ch) ** 0.5)
    convs = (len(indices) - 3) // 2  # conv, prelu, (conv, prelu) × convs, conv
    if scale < 1 or in_ch * scale ** 2 != last.shape[0] or len(indices) != 2 * convs + 3:
        raise CheckpointError(f"{name}: body layers do not form a compact Real-ESRGAN model (SRVGGNetCompact)")
    net = SRVGGNetCompact(in_ch, in_ch, nf, convs, scale)
    _load(net, sd, name)
    return net


def _load(net: nn.Module, sd: dict[str, Tensor], name: str) -> None:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    wrong = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or extra or wrong:
        what = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                else f"shape of {wrong[:3]}")
        raise CheckpointError(f"{name}: does not match the ESRGAN layout its keys suggest ({what})")
    net.load_state_dict({k: v.float() for k, v in sd.items()})


# Keys that name an architecture we do not run, so the refusal can say what the file is.
_OTHER_ARCHS = (("layers.0.residual_group", "SwinIR/HAT"), ("layers.0.blocks.0.attn", "Swin-based (SwinIR/HAT)"),
                ("conv_before_upsample", "SwinIR"), ("m_head.0.weight", "SCUNet"), ("before_RG", "DAT"),
                ("stylegan_decoder", "GFPGAN (face restoration)"), ("generator.", "CodeFormer/GAN wrapper"))


def build_upscaler(sd: dict[str, Tensor], name: str) -> nn.Module:
    """The network a state dict describes (RRDBNet in either layout, or SRVGGNetCompact), weights loaded,
    in eval mode. A file of another architecture, or a damaged one, raises CheckpointError with what it saw."""
    if not sd or not all(isinstance(v, Tensor) and v.is_floating_point() for v in sd.values()):
        raise CheckpointError(f"{name}: holds no floating-point weights; not an upscaler model")
    if "model.0.weight" in sd:
        net: nn.Module = build_rrdbnet(from_old_layout(sd, name), name)
    elif "conv_first.weight" in sd and "body.0.rdb1.conv1.weight" in sd:
        net = build_rrdbnet(sd, name)
    elif "body.0.weight" in sd and "body.1.weight" in sd and sd["body.1.weight"].dim() == 1:
        net = build_compact(sd, name)
    else:
        arch = next((label for key, label in _OTHER_ARCHS if any(key in k for k in sd)), "")
        known = "ESRGAN / Real-ESRGAN (RRDBNet) and Real-ESRGAN compact (SRVGGNetCompact)"
        raise CheckpointError(f"{name}: " + (f"a {arch} model; SD Studio runs {known} upscalers only" if arch
                              else f"not an upscaler model SD Studio knows (it runs {known})"))
    return net.eval().requires_grad_(False)
