"""Tiled VAE decode and encode whose GroupNorm statistics are taken over the whole image.

Every layer of the AutoencoderKL (vae.py) is local except GroupNorm (statistics over all pixels) and the
single mid-block attention (all pixels attend to all). Cutting the image into independent tiles therefore
changes each tile's normalisation and leaves seams; A1111-era "tiled VAE" extensions (multidiffusion's
Tiled VAE) fix this by pausing every tile at each GroupNorm and sharing the statistics. We do the same in its
simplest exact form: the network runs layer by layer; each layer's input is held whole (on `storage`, the CPU
when the VAE runs on an accelerator) and its output is computed in horizontal bands of full width, each band
reading the one or two rows of halo its 3x3 convolution needs. A GroupNorm before a convolution is a first
sweep over the bands summing x and x^2 per group (float64), then applied inside the convolution's band. The
attention runs over all pixels in query chunks (exact: each query's softmax row is complete). The result
equals the untiled one up to float rounding; the accelerator holds one band's work at a time instead of the
whole image's activations. The widest tensor, the last Upsample's full-resolution output, is never held: its
rows are recomputed from the half-resolution input whenever the next block reads them (_Upsampled), which
costs about a third of a decode more and keeps the held tensors at a fraction of an untiled decode's peak.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdstudio.engine.errors import RequestError
from sdstudio.engine.job_size import AUTO_TILE_PIXELS, TILED_VAE_MODES, vae_decode_bytes
from sdstudio.engine.vae import AttnBlock, AutoencoderKL, Downsample, MidBlock, ResnetBlock, Upsample

# Pixels per band at the layer's own resolution: 2**16 is a 256x256 tile's worth (64 MiB for 256 fp32
# channels); the 1-row halo then costs a few percent at 1024-2048 px.
BAND_PIXELS = 1 << 16
# Attention queries per chunk in the mid block (keys: all pixels).
ATTENTION_CHUNK = 4096
Pre = Callable[[Tensor], Tensor]


def available_memory(device: torch.device) -> int | None:
    """Bytes free on `device` now, or None where it cannot be asked (then only the size rule applies)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:  # Linux: free plus reclaimable cache; elsewhere the free pages POSIX reports
            with open("/proc/meminfo") as f:
                return next(int(line.split()[1]) << 10 for line in f if line.startswith("MemAvailable:"))
        except (OSError, StopIteration, ValueError):
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    return None


def use_tiles(mode: str, width: int, height: int, device: torch.device, element_size: int = 4) -> bool:
    """Whether a decode/encode at width x height runs tiled: "on"/"off" as told; "auto" above AUTO_TILE_PIXELS
    or when the untiled decode's estimate exceeds the memory free on `device`."""
    if mode not in TILED_VAE_MODES:
        raise RequestError(f"tiled VAE {mode!r} must be one of {', '.join(TILED_VAE_MODES)}")
    if mode != "auto":
        return mode == "on"
    if width * height > AUTO_TILE_PIXELS:
        return True
    free = available_memory(device)
    return free is not None and vae_decode_bytes(width, height) * element_size // 4 > free


class _Runner:
    """Runs the VAE's layers band by band: computation on `device`, whole tensors held on `storage`."""

    def __init__(self, vae: AutoencoderKL, storage: torch.device | None, band_pixels: int):
        parameter = next(vae.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.storage = self.device if storage is None else storage
        self.band_pixels = band_pixels

    def rows(self, width: int) -> int:
        return max(1, self.band_pixels // max(1, width))

    def bands(self, height: int, width: int):
        step = self.rows(width)
        for top in range(0, height, step):
            yield top, min(height, top + step)

    def on_device(self, x: Tensor) -> Tensor:
        return x.to(self.device, self.dtype)

    def norm_affine(self, x: Tensor, norm: nn.GroupNorm) -> Pre:
        """GroupNorm over the whole of x as a per-channel x * a + b, then SiLU (every GroupNorm in the VAE
        is followed by SiLU except the attention's, which runs whole)."""
        b, c, h, w = x.shape
        g = norm.num_groups
        total = torch.zeros(b, g, dtype=torch.float64, device=self.device)
        squares = torch.zeros_like(total)
        for top, bottom in self.bands(h, w):
            band = self.on_device(x[:, :, top:bottom]).reshape(b, g, -1)
            total += band.sum(-1, dtype=torch.float64)
            squares += band.square().sum(-1, dtype=torch.float64)
        count = (c // g) * h * w
        mean = total / count
        rstd = ((squares / count - mean.square()).clamp_min(0) + norm.eps).rsqrt()
        weight = norm.weight.double()
        bias = norm.bias.double()
        scale = (rstd.repeat_interleave(c // g, dim=1) * weight).to(self.dtype)[:, :, None, None]
        shift = (bias - (mean * rstd).repeat_interleave(c // g, dim=1) * weight).to(self.dtype)[:, :, None, None]
        return lambda t: F.silu(t * scale + shift)

    def conv(self, x: Tensor, conv: nn.Conv2d, pre: Pre | None = None, upsample: bool = False,
             residual: Tensor | None = None, shortcut: nn.Module | None = None, out: Tensor | None = None) -> Tensor:
        """conv(pre(x)) (a 3x3 conv with padding 1), after a nearest x2 upsample when `upsample`, plus
        shortcut(residual) when given; written band by band into `out` (a new tensor when None). `out` may be
        x itself (same shape, no upsample): the row above each band, overwritten by the band before, is kept
        aside before that write (`above`), so no whole second tensor is needed."""
        b, _, h, w = x.shape
        factor = 2 if upsample else 1
        streaming = out is x
        if out is None:
            out = torch.empty(b, conv.out_channels, h * factor, w * factor, dtype=self.dtype, device=self.storage)
        above = None
        for top, bottom in self.bands(h, w * factor):
            lo, hi = max(0, top - 1), min(h, bottom + 1)
            if streaming and above is not None:
                t = torch.cat([above, self.on_device(x[:, :, top:hi])], dim=2)
            else:
                t = self.on_device(x[:, :, lo:hi])
            t = pre(t) if pre is not None else t
            if upsample:
                t = F.interpolate(t, scale_factor=2.0, mode="nearest")
            y = conv(t)[:, :, (top - lo) * factor:(top - lo + bottom - top) * factor]
            if residual is not None:
                skip = self.on_device(residual[:, :, top * factor:bottom * factor])
                y = (shortcut(skip) if shortcut is not None else skip) + y
            if streaming:
                above = self.on_device(x[:, :, bottom - 1:bottom]).clone()
            out[:, :, top * factor:bottom * factor] = y.to(self.storage)
        return out

    def downsample(self, x: Tensor, module: Downsample) -> Tensor:
        """LDM's pad (0, 1, 0, 1) and stride-2 conv: output row i reads input rows 2i..2i+2."""
        b, _, h, w = x.shape
        oh, ow = (h - 2) // 2 + 1, (w - 2) // 2 + 1
        out = torch.empty(b, module.conv.out_channels, oh, ow, dtype=self.dtype, device=self.storage)
        for top, bottom in self.bands(oh, ow):
            t = self.on_device(x[:, :, 2 * top:min(h, 2 * bottom + 1)])
            missing = 2 * (bottom - top) + 1 - t.shape[2]
            out[:, :, top:bottom] = module.conv(F.pad(t, (0, 1, 0, missing))).to(self.storage)
        return out

    def resnet(self, x: Tensor, block: ResnetBlock) -> Tensor:
        h = self.conv(x, block.conv1, self.norm_affine(x, block.norm1))
        shortcut = None if isinstance(block.nin_shortcut, nn.Identity) else block.nin_shortcut
        # The sum overwrites h as it goes: h and x are all that is held, and x may be the caller's input
        # or the recomputed upsample (_Upsampled).
        return self.conv(h, block.conv2, self.norm_affine(h, block.norm2), residual=x, shortcut=shortcut, out=h)

    def attention(self, x: Tensor, block: AttnBlock) -> Tensor:
        """The attention block with queries in chunks; its GroupNorm (no SiLU) uses the whole image."""
        b, c, h, w = x.shape
        y = block.norm(self.on_device(x))
        q, k, v = (t.flatten(2).transpose(1, 2).unsqueeze(1) for t in (block.q(y), block.k(y), block.v(y)))
        del y
        out = torch.cat([F.scaled_dot_product_attention(q[:, :, i:i + ATTENTION_CHUNK], k, v)
                         for i in range(0, q.shape[2], ATTENTION_CHUNK)], dim=2)
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return (self.on_device(x) + block.proj_out(out)).to(self.storage)

    def mid(self, x: Tensor, mid: MidBlock) -> Tensor:
        return self.resnet(self.attention(self.resnet(x, mid.block_1), mid.attn_1), mid.block_2)

    def level(self, x: Tensor, blocks: nn.ModuleList, resize: nn.Module, lazy: bool = False) -> Tensor:
        for block in blocks:
            x = self.resnet(x, block)
        if isinstance(resize, Upsample):
            return _Upsampled(self, x, resize.conv) if lazy else self.conv(x, resize.conv, upsample=True)
        if isinstance(resize, Downsample):
            return self.downsample(x, resize)
        return x


class _Upsampled:
    """The last Upsample's output (full resolution, the widest tensor of the decoder), never held whole: the
    rows asked for are computed from the half-resolution input, as many times as the next block reads them
    (three: its GroupNorm statistics, conv1, the shortcut). That costs about a third of a decode more and
    keeps the largest tensor of an untiled decode out of memory."""

    def __init__(self, run: _Runner, x: Tensor, conv: nn.Conv2d):
        self.run, self.x, self.conv = run, x, conv
        b, _, h, w = x.shape
        self.shape = torch.Size((b, conv.out_channels, 2 * h, 2 * w))

    def __getitem__(self, index: tuple[slice, slice, slice]) -> Tensor:
        top, bottom = index[2].start, index[2].stop
        h = self.x.shape[2]
        # output row r reads upsampled rows r-1..r+1, which are input rows (r-1)//2..(r+1)//2
        lo, hi = max(0, (top - 1) // 2), min(h, bottom // 2 + 1)
        t = F.interpolate(self.run.on_device(self.x[:, :, lo:hi]), scale_factor=2.0, mode="nearest")
        return self.conv(t)[:, :, top - 2 * lo:bottom - 2 * lo]


@torch.no_grad()
def tiled_decode(vae: AutoencoderKL, z: Tensor, storage: torch.device | None = None,
                 band_pixels: int = BAND_PIXELS) -> Tensor:
    """vae.decode(z) computed in bands (see the module docstring); the image is returned on `storage`
    (default: the VAE's device) in the VAE's dtype."""
    run = _Runner(vae, storage, band_pixels)
    decoder = vae.decoder
    x = vae.post_quant_conv(run.on_device(z))
    x = run.conv(x.to(run.storage), decoder.conv_in)
    x = run.mid(x, decoder.mid)
    for i, level in reversed(list(enumerate(decoder.up))):
        x = run.level(x, level.block, level.upsample, lazy=i == 1)
    return run.conv(x, decoder.conv_out, run.norm_affine(x, decoder.norm_out))


@torch.no_grad()
def tiled_encode(vae: AutoencoderKL, image: Tensor, storage: torch.device | None = None,
                 band_pixels: int = BAND_PIXELS) -> tuple[Tensor, Tensor]:
    """vae.encode(image) computed in bands: (mean, logvar) on the VAE's device."""
    run = _Runner(vae, storage, band_pixels)
    encoder = vae.encoder
    x = run.conv(image, encoder.conv_in)
    for level in encoder.down:
        x = run.level(x, level.block, level.downsample)
    x = run.mid(x, encoder.mid)
    x = run.conv(x, encoder.conv_out, run.norm_affine(x, encoder.norm_out))
    return vae.encode_moments(run.on_device(x))
