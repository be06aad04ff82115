"""Random-weight upscaler files in the layouts people download, built from the published architectures'
module structure (independently of sdstudio/engine/rrdbnet.py), with reference forwards to compare against.

- `old_esrgan`: the original ESRGAN repository's RRDB_Net as one nn.Sequential (keys model.0, model.1.sub.N.
  RDBk.convj.0, model.3, ...); upsample = nearest ×2 then conv + LeakyReLU per octave.
- `basicsr_rrdbnet`: BasicSR/Real-ESRGAN's state dict naming, written here from the old one's weights by the
  documented correspondence (used for Real-ESRGAN ×2 with pixel-unshuffle too).
- `compact`: Real-ESRGAN's SRVGGNetCompact as nn.Sequential body + pixel-shuffle + nearest skip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Shortcut(nn.Module):
    def __init__(self, sub: nn.Module) -> None:
        super().__init__()
        self.sub = sub

    def forward(self, x):
        return x + self.sub(x)


class _RDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        ins = [nf, nf + gc, nf + 2 * gc, nf + 3 * gc, nf + 4 * gc]
        for j, c in enumerate(ins, 1):
            setattr(self, f"conv{j}", nn.Sequential(nn.Conv2d(c, gc if j < 5 else nf, 3, padding=1)))

    def forward(self, x):
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class _RRDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.RDB1, self.RDB2, self.RDB3 = _RDB(nf, gc), _RDB(nf, gc), _RDB(nf, gc)

    def forward(self, x):
        return self.RDB3(self.RDB2(self.RDB1(x))) * 0.2 + x


def old_esrgan(nf: int = 8, gc: int = 4, blocks: int = 2, scale: int = 4, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, nf, 3, padding=1),
                               _Shortcut(nn.Sequential(*[_RRDB(nf, gc) for _ in range(blocks)],
                                                       nn.Conv2d(nf, nf, 3, padding=1)))]
    for _ in range({1: 0, 2: 1, 4: 2, 8: 3}[scale]):
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(nf, nf, 3, padding=1), nn.LeakyReLU(0.2)]
    layers += [nn.Conv2d(nf, nf, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(nf, 3, 3, padding=1)]
    model = nn.Sequential(*layers).eval()
    with torch.no_grad():  # textured weights: big enough that a wrong wiring shows
        for p in model.parameters():
            p.mul_(1.5)
    return model


def old_state(model: nn.Sequential) -> dict[str, torch.Tensor]:
    return {f"model.{k}": v.clone() for k, v in model.state_dict().items()}


def basicsr_state(model: nn.Sequential) -> dict[str, torch.Tensor]:
    """The same weights under BasicSR's names (conv_first, body.N.rdbK.convJ, conv_body, conv_upI, conv_hr,
    conv_last)."""
    convs = [i for i, m in enumerate(model) if isinstance(m, nn.Conv2d)]
    names = ["conv_first"] + [f"conv_up{i}" for i in range(1, len(convs) - 2)] + ["conv_hr", "conv_last"]
    out = {}
    for index, name in zip(convs, names, strict=True):
        out[f"{name}.weight"], out[f"{name}.bias"] = model[index].weight.clone(), model[index].bias.clone()
    sub = model[1].sub
    for n, block in enumerate(sub[:-1]):
        for k in (1, 2, 3):
            for j in range(1, 6):
                conv = getattr(getattr(block, f"RDB{k}"), f"conv{j}")[0]
                out[f"body.{n}.rdb{k}.conv{j}.weight"] = conv.weight.clone()
                out[f"body.{n}.rdb{k}.conv{j}.bias"] = conv.bias.clone()
    out["conv_body.weight"], out["conv_body.bias"] = sub[-1].weight.clone(), sub[-1].bias.clone()
    return out


def unshuffled_esrgan(unshuffle: int, nf: int = 8, gc: int = 4, blocks: int = 1, seed: int = 0):
    """Real-ESRGAN ×2 (unshuffle 2) / ×1 (unshuffle 4): a ×4 RRDBNet on pixel-unshuffled input. Returns
    (reference forward, BasicSR state dict)."""
    model = old_esrgan(nf, gc, blocks, 4, seed)
    with torch.no_grad():
        first = nn.Conv2d(3 * unshuffle ** 2, nf, 3, padding=1)
        model[0] = first
    state = basicsr_state(model)

    def forward(x):
        return model(F.pixel_unshuffle(x, unshuffle))

    return forward, state


def compact(nf: int = 8, convs: int = 3, scale: int = 4, seed: int = 0):
    """SRVGGNetCompact: (reference forward, state dict with keys body.N.weight / body.N.bias)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, nf, 3, padding=1), nn.PReLU(nf)]
    for _ in range(convs):
        layers += [nn.Conv2d(nf, nf, 3, padding=1), nn.PReLU(nf)]
    layers.append(nn.Conv2d(nf, 3 * scale * scale, 3, padding=1))
    body = nn.Sequential(*layers).eval()
    with torch.no_grad():
        for m in body:
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(0.05, 0.5)

    def forward(x):
        return F.pixel_shuffle(body(x), scale) + F.interpolate(x, scale_factor=scale, mode="nearest")

    return forward, {f"body.{k}": v.clone() for k, v in body.state_dict().items()}
