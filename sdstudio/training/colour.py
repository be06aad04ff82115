"""Measuring colour: whether the autoencoder's latents carry hue, how faithfully it reconstructs colour, and
whether generations have their emoji's dominant colour (issue 14).

- CIE76 colour difference: Euclidean distance in CIE L*a*b* (D65 white, sRGB primaries, the CIE 1976
  formulas), here between 16x16 box thumbnails, the resolution the fidelity test compares at.
- The probe: a small MLP from each latent pixel's 3x3 neighbourhood to the mean colour of the 8x8 pixel
  patch it covers, fitted on 80 % of the images and scored (R^2, variance explained) on the other 20 %, for
  the opponent axes R-G and B-Y (Y = (R+G)/2). If the probe cannot recover an axis, no decoder can.
- Dominant colour: the hue class holding the most saturated, non-white pixels, with hue bins over the whole
  circle (so orange is not red, and teal is not green).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

THUMB = 16
# Hue bins in degrees, [start, end), covering the circle; red wraps around 0.
HUE_BINS = (("red", 345, 15), ("orange", 15, 40), ("yellow", 40, 70), ("green", 70, 165),
            ("cyan", 165, 195), ("blue", 195, 255), ("purple", 255, 345))
TEST_COLOURS = ("red", "green", "blue", "yellow")
MIN_SATURATION = 0.35
MIN_VALUE = 0.2
WHITE = 235  # a pixel with every channel at or above this is background


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 or [0, 255] floats in sRGB -> (..., 3) CIE L*a*b* (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def thumbnails(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 16, 16, 3) float32 box-downsampled."""
    return np.stack([np.asarray(Image.fromarray(im).resize((THUMB, THUMB), Image.Resampling.BOX),
                                dtype=np.float32) for im in images])


def mean_delta_e(originals: np.ndarray, reconstructions: np.ndarray) -> float:
    """Mean CIE76 difference between the 16x16 thumbnails of two image sets (N, H, W, 3 uint8)."""
    a, b = srgb_to_lab(thumbnails(originals)), srgb_to_lab(thumbnails(reconstructions))
    return float(np.sqrt(((a - b) ** 2).sum(-1)).mean())


def opponent(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, ...) RGB -> (N, 2, ...) opponent colour axes: R - G and B - (R + G) / 2."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    return torch.stack([r - g, b - (r + g) / 2], 1)


@dataclass
class ProbeResult:
    r2_red_green: float
    r2_blue_yellow: float
    r2_rgb: tuple[float, float, float]


def _r2(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1 - ((prediction - target) ** 2).mean(0) / target.var(0, unbiased=False)


def colour_probe(latents: torch.Tensor, images: torch.Tensor, steps: int = 600, seed: int = 0) -> ProbeResult:
    """Variance of each 8x8 patch's mean colour explained by a probe from the 3x3 latent neighbourhood.

    latents: (N, 4, h, w); images: (N, 3, 8h, 8w) in [-1, 1]. Held-out images score the probe.
    """
    generator = torch.Generator().manual_seed(seed)
    factor = images.shape[-1] // latents.shape[-1]
    colour = F.avg_pool2d(images.float(), factor)
    target = torch.cat([opponent(colour), colour], 1)  # R-G, B-Y, R, G, B
    features = F.unfold(F.pad(latents.float(), (1, 1, 1, 1), mode="replicate"), 3)  # (N, 36, h*w)
    features = features.transpose(1, 2)
    target = target.flatten(2).transpose(1, 2)
    order = torch.randperm(latents.shape[0], generator=generator)
    split = int(0.8 * len(order))
    fit, held = order[:split], order[split:]
    x_fit, y_fit = features[fit].reshape(-1, features.shape[-1]), target[fit].reshape(-1, 5)
    x_held, y_held = features[held].reshape(-1, features.shape[-1]), target[held].reshape(-1, 5)
    mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-6
    torch.manual_seed(seed)
    probe = torch.nn.Sequential(torch.nn.Linear(x_fit.shape[1], 128), torch.nn.SiLU(),
                                torch.nn.Linear(128, 128), torch.nn.SiLU(), torch.nn.Linear(128, 5))
    opt = torch.optim.Adam(probe.parameters(), lr=3e-3)
    with torch.enable_grad():
        for _ in range(steps):
            batch = torch.randint(0, x_fit.shape[0], (4096,), generator=generator)
            loss = F.mse_loss(probe((x_fit[batch] - mu) / sd), y_fit[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        r2 = _r2(probe((x_held - mu) / sd), y_held)
    return ProbeResult(float(r2[0]), float(r2[1]), (float(r2[2]), float(r2[3]), float(r2[4])))


def hue_classes(rgb: np.ndarray) -> dict[str, int]:
    """Counts of saturated, non-white pixels in each hue bin of an (H, W, 3) uint8 image."""
    pixels = rgb.reshape(-1, 3)
    pixels = pixels[(pixels < WHITE).any(1)]
    hsv = np.asarray(Image.fromarray(pixels[None].astype(np.uint8)).convert("HSV"), dtype=np.float32)[0]
    keep = (hsv[:, 1] / 255 >= MIN_SATURATION) & (hsv[:, 2] / 255 >= MIN_VALUE)
    hue = hsv[keep, 0] * 360 / 256
    counts = {}
    for name, start, end in HUE_BINS:
        inside = (hue >= start) | (hue < end) if start > end else (hue >= start) & (hue < end)
        counts[name] = int(inside.sum())
    return counts


def dominant_colour(image: Image.Image | np.ndarray) -> str:
    """The hue bin with the most saturated non-white pixels; "none" for a grey or empty image."""
    counts = hue_classes(np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image))
    name = max(counts, key=counts.get)
    return name if counts[name] > 0 else "none"


def colour_test_set(images: np.ndarray, names: list[str], per_colour: int = 20,
                    share: float = 0.6) -> list[tuple[str, str]]:
    """(name, colour) of dataset emoji clearly dominated by red, green, blue or yellow: that bin holds at
    least `share` of the saturated pixels, and saturated pixels are at least half of the non-white ones.
    Skin-tone variants are left out (their colour is the skin's). Up to `per_colour` of each, in dataset
    order."""
    chosen: dict[str, list[str]] = {c: [] for c in TEST_COLOURS}
    for image, name in zip(images, names, strict=True):
        if "skin tone" in name:
            continue
        counts = hue_classes(image)
        total = sum(counts.values())
        non_white = int((image.reshape(-1, 3) < WHITE).any(1).sum())
        if total == 0 or total < 0.5 * non_white:
            continue
        colour = max(counts, key=counts.get)
        if colour in chosen and counts[colour] >= share * total and len(chosen[colour]) < per_colour:
            chosen[colour].append(name)
    return [(name, colour) for colour in TEST_COLOURS for name in chosen[colour]]


@torch.no_grad()
def autoencoder_check(vae: torch.nn.Module, images: np.ndarray, batch_size: int = 128) -> dict[str, float]:
    """The issue-14 checks of an autoencoder on a whole dataset (N, 64, 64, 3 uint8): the colour probe on its
    posterior means and the mean CIE76 difference of its reconstructions (decoded from the means)."""
    means, recons = [], []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size]).permute(0, 3, 1, 2).float() / 127.5 - 1
        mean, _ = vae.encode(x)
        means.append(mean)
        recons.append(((vae.decode(mean).clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1))
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    probe = colour_probe(torch.cat(means), pixels)
    return {"probe_r2_red_green": probe.r2_red_green, "probe_r2_blue_yellow": probe.r2_blue_yellow,
            "probe_r2_r": probe.r2_rgb[0], "probe_r2_g": probe.r2_rgb[1], "probe_r2_b": probe.r2_rgb[2],
            "mean_delta_e": mean_delta_e(images, torch.cat(recons).numpy())}
