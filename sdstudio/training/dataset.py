"""The emoji dataset: colour emoji rendered with Pillow, captioned with their CLDR names.

Sources (Debian packages, both installed by the CI script):
- `fonts-noto-color-emoji`: Noto Color Emoji, a CBDT bitmap font (strikes at size 109), SIL OFL-1.1.
- `unicode-data`: Unicode's `emoji-test.txt`, whose fully-qualified lines carry the CLDR short names
  ("cat face", "flag: Japan", "family: man, woman, girl", "thumbs up: medium skin tone").

Each emoji is drawn through Pillow's raqm layout (so ZWJ sequences, keycaps and flags shape into one glyph),
cropped to its ink, scaled to fit GLYPH_SIZE and centred on white at IMAGE_SIZE. Sequences the font cannot
draw as a single glyph are left out. Skin-tone variants stay in, with a sampling weight that makes each
family of variants count as much as one ordinary emoji. The build is deterministic.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST_PATH = Path("/usr/share/unicode/emoji/emoji-test.txt")
FONT_LICENSE = "SIL Open Font License 1.1 (OFL-1.1)"
BITMAP_SIZE = 109  # the only strike size of Noto Color Emoji's CBDT table
IMAGE_SIZE = 64
GLYPH_SIZE = 56
SKIN_TONES = ("light skin tone", "medium-light skin tone", "medium skin tone", "medium-dark skin tone",
              "dark skin tone")

_LINE = re.compile(r"^([0-9A-F ]+?)\s*; fully-qualified\s*# \S+ E[0-9.]+ (.+)$")


@dataclass(frozen=True)
class EmojiEntry:
    """One fully-qualified emoji from emoji-test.txt."""

    text: str
    name: str
    group: str


@dataclass
class EmojiDataset:
    """Rendered images (N, 64, 64, 3) uint8 on white, their captions, and per-image sampling weights."""

    images: np.ndarray
    names: list[str]
    weights: np.ndarray
    info: dict

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, images=self.images, weights=self.weights,
                            names=np.array(json.dumps(self.names)), info=np.array(json.dumps(self.info)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> EmojiDataset:
        with np.load(path) as data:
            return cls(data["images"], json.loads(str(data["names"])), data["weights"],
                       json.loads(str(data["info"])))


def read_emoji_test(path: Path = EMOJI_TEST_PATH) -> list[EmojiEntry]:
    """Parse the fully-qualified entries of Unicode's emoji-test.txt, in file order."""
    entries, group = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
            continue
        match = _LINE.match(line)
        if match:
            text = "".join(chr(int(cp, 16)) for cp in match.group(1).split())
            entries.append(EmojiEntry(text, match.group(2).strip(), group))
    return entries


def is_skin_tone_variant(name: str) -> bool:
    return any(tone in name for tone in SKIN_TONES)


def skin_tone_base(name: str) -> str:
    """The name with its skin-tone qualifiers removed: all variants of one emoji share it."""
    base = name
    for tone in sorted(SKIN_TONES, key=len, reverse=True):
        base = base.replace(tone, "")
    return re.sub(r"[:,\s]+$", "", re.sub(r"(,\s*)+", ", ", base)).strip()


def render_emoji(font: ImageFont.FreeTypeFont, text: str) -> Image.Image | None:
    """Draw one emoji centred on white at IMAGE_SIZE, or None if it does not shape into a single glyph."""
    left, top, right, bottom = font.getbbox(text, mode="RGBA")
    width, height = right - left, bottom - top
    if width <= 0 or height <= 0 or width > 1.5 * BITMAP_SIZE:
        return None
    canvas = Image.new("RGBA", (width, height), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((-left, -top), text, font=font, embedded_color=True)
    bbox = canvas.getchannel("A").getbbox()
    if bbox is None:
        return None
    glyph = canvas.crop(bbox)
    scale = GLYPH_SIZE / max(glyph.size)
    size = (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale)))
    glyph = glyph.resize(size, Image.Resampling.LANCZOS)
    image = Image.new("RGBA", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255, 255))
    image.alpha_composite(glyph, ((IMAGE_SIZE - size[0]) // 2, (IMAGE_SIZE - size[1]) // 2))
    return image.convert("RGB")


def sampling_weights(names: list[str]) -> np.ndarray:
    """Weight 1 per ordinary emoji; the skin-tone variants of one emoji share a total weight of 1."""
    variants: dict[str, int] = {}
    for name in names:
        if is_skin_tone_variant(name):
            variants[skin_tone_base(name)] = variants.get(skin_tone_base(name), 0) + 1
    return np.array([1.0 / variants[skin_tone_base(n)] if is_skin_tone_variant(n) else 1.0 for n in names],
                    dtype=np.float32)


def open_font() -> ImageFont.FreeTypeFont:
    """Noto Color Emoji at its bitmap size, laid out by raqm (which shapes ZWJ sequences and flags)."""
    if not features.check("raqm"):
        raise RuntimeError("Pillow was built without raqm; ZWJ sequences and flags would not shape")
    if not FONT_PATH.exists():
        raise FileNotFoundError("install the Debian package fonts-noto-color-emoji")
    return ImageFont.truetype(str(FONT_PATH), BITMAP_SIZE, layout_engine=ImageFont.Layout.RAQM)


def build_dataset(limit: int | None = None) -> EmojiDataset:
    """Render every fully-qualified emoji the font draws as one glyph (the first `limit` if given)."""
    if not EMOJI_TEST_PATH.exists():
        raise FileNotFoundError("install the Debian package unicode-data")
    font = open_font()
    images, names, skipped = [], [], []
    for entry in read_emoji_test():
        if limit is not None and len(names) >= limit:
            break
        image = render_emoji(font, entry.text)
        if image is None:
            skipped.append(entry.name)
            continue
        images.append(np.asarray(image))
        names.append(entry.name)
    info = {"font": FONT_PATH.name, "font_version": font_version(font), "font_license": FONT_LICENSE,
            "names_source": f"{EMOJI_TEST_PATH.name} ({emoji_version()})", "image_size": IMAGE_SIZE,
            "skipped": skipped}
    return EmojiDataset(np.stack(images), names, sampling_weights(names), info)


def font_version(font: ImageFont.FreeTypeFont) -> str:
    """The font's version string, read from its 'head' table revision."""
    data = Path(font.path).read_bytes()
    num_tables = int.from_bytes(data[4:6], "big")
    for i in range(num_tables):
        record = data[12 + 16 * i: 28 + 16 * i]
        if record[:4] == b"head":
            offset = int.from_bytes(record[8:12], "big")
            revision = int.from_bytes(data[offset + 4: offset + 8], "big") / 65536
            return f"{revision:.3f}"
    return "unknown"


def emoji_version() -> str:
    for line in EMOJI_TEST_PATH.read_text(encoding="utf-8").splitlines()[:10]:
        if line.startswith("# Version:"):
            return "Emoji " + line.split(":", 1)[1].strip()
    return "unknown version"
