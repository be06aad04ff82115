"""Watch the gallery's thumbnail loader from outside: the production classes keep no counters for tests."""

from __future__ import annotations

import threading

from sdstudio.history.thumbnails import ThumbnailCache
from sdstudio.ui.gallery_model import ThumbnailLoader


class ThumbnailSpy:
    """Counts thumbnails read (ThumbnailCache.get, called on the loader's thread) and the longest queue the
    gallery handed the loader (ThumbnailLoader.want). Install it before the gallery is made."""

    def __init__(self, monkeypatch) -> None:
        self.loads = 0
        self.most_queued = 0
        self._lock = threading.Lock()
        get, want = ThumbnailCache.get, ThumbnailLoader.want

        def counting_get(cache, entry_id, source):
            with self._lock:
                self.loads += 1
            return get(cache, entry_id, source)

        def recording_want(loader, items):
            self.most_queued = max(self.most_queued, len(items))
            return want(loader, items)

        monkeypatch.setattr(ThumbnailCache, "get", counting_get)
        monkeypatch.setattr(ThumbnailLoader, "want", recording_want)
