"""Small JPEG thumbnails cached beside the outputs, made on demand (or right away when an entry is added).

An entry's pixels never change, so a thumbnail keyed by the entry id never goes stale. The file name is a
hash of the id, never the id itself: an id can come from a PNG someone else wrote, and a name made from
its text ("../../x") could write or delete files outside the cache. Files are written atomically, so
threads that race to make the same thumbnail both end with a whole file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

from sdstudio.history.atomic import atomic_write
from sdstudio.history.png import open_image

THUMBNAIL_SIZE = 128


class ThumbnailCache:
    def __init__(self, folder: Path, size: int = THUMBNAIL_SIZE) -> None:
        self.folder = folder
        self.size = size

    def path(self, entry_id: str) -> Path:
        """Always a file directly inside `folder`, whatever text `entry_id` holds."""
        return self.folder / f"{hashlib.sha256(entry_id.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}.jpg"

    def make(self, image: Image.Image, entry_id: str) -> Path:
        """Write the thumbnail of an image already in memory."""
        small = image.convert("RGB")
        small.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
        path = self.path(entry_id)
        atomic_write(path, lambda file: small.save(file, format="JPEG", quality=85))
        return path

    def get(self, entry_id: str, source: Path) -> Path:
        """The cached thumbnail of `source`, made now if missing. Raises OSError if `source` is unreadable,
        ImageFileError (a ValueError) when it has more pixels than Pillow's bomb limit."""
        path = self.path(entry_id)
        if path.exists():
            return path
        with open_image(source) as image:
            image.draft("RGB", (self.size, self.size))  # JPEG sources decode at reduced size
            return self.make(image, entry_id)

    def discard(self, entry_id: str) -> None:
        self.path(entry_id).unlink(missing_ok=True)
