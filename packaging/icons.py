"""Render SD Studio's icon (sdstudio/resources/icons/sdstudio.svg) to the PNG sizes desktops use, .ico, .icns.

`python packaging/icons.py` rewrites sdstudio/resources/icons/sdstudio-<size>.png (committed: the Linux install
step and the app read them); `build.py` calls `platform_icons()` to make the Windows .ico and macOS .icns.
Qt's SVG renderer draws it (SVG Tiny 1.2, the profile the icon keeps to); Pillow writes .ico and .icns.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QRectF
from PySide6.QtGui import QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

ROOT = Path(__file__).resolve().parent.parent
ICONS = ROOT / "sdstudio" / "resources" / "icons"
SVG = ICONS / "sdstudio.svg"
# freedesktop hicolor theme sizes (Icon Theme Specification); 256 and 512 serve HiDPI menus and docks.
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)  # 256 is the largest a Windows .ico holds
ICNS_SIZE = 1024  # macOS "512@2x"


def png_path(size: int, folder: Path = ICONS) -> Path:
    return folder / f"sdstudio-{size}.png"


def render(size: int, svg: Path = SVG) -> Image.Image:
    """The SVG drawn on a transparent size x size RGBA canvas, antialiased."""
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg}: not an SVG Qt can draw")
    canvas = QImage(size, size, QImage.Format.Format_RGBA8888)
    canvas.fill(0)
    painter = QPainter(canvas)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    data = bytes(canvas.constBits())[: canvas.sizeInBytes()]
    return Image.frombuffer("RGBA", (size, size), data, "raw", "RGBA", canvas.bytesPerLine(), 1).copy()


def write_pngs(folder: Path = ICONS, svg: Path = SVG) -> list[Path]:
    written = []
    for size in PNG_SIZES:
        path = png_path(size, folder)
        render(size, svg).save(path, optimize=True)
        written.append(path)
    return written


def platform_icons(out: Path, svg: Path = SVG) -> tuple[Path, Path]:
    """(sdstudio.ico, sdstudio.icns) in `out`, for the Windows and macOS builds."""
    out.mkdir(parents=True, exist_ok=True)
    ico, icns = out / "sdstudio.ico", out / "sdstudio.icns"
    # Pillow downsamples for .ico; render each size instead, small ones look sharper drawn than shrunk.
    frames = [render(size, svg) for size in ICO_SIZES]
    frames[-1].save(ico, format="ICO", sizes=[(s, s) for s in ICO_SIZES], append_images=frames[:-1])
    render(ICNS_SIZE, svg).save(icns, format="ICNS")  # Pillow derives the smaller icns members
    return ico, icns


if __name__ == "__main__":
    for written in write_pngs():
        print(written.relative_to(ROOT))
    sys.exit(0)
