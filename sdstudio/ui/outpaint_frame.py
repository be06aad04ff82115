"""Dragging the frame to outpaint: with the canvas's Frame tool, a drag that starts near an edge of the image
moves that edge outward; the canvas draws the grown frame while the drag lasts and asks for that extension
when it ends. Plain geometry in image pixels, no Qt, so it is tested without a window.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdstudio.engine.outpaint import MAX_EXTENSION, Extension

STEP = 8  # the drag snaps to the latent multiple, so the frame shown is the canvas that will be made


@dataclass
class FrameDrag:
    side: str  # the edge that moves: left, right, up or down
    start: tuple[float, float]  # image coordinates where the drag began
    image_size: tuple[int, int]
    now: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def begin(cls, point: tuple[float, float], image_size: tuple[int, int]) -> FrameDrag:
        """The drag of the edge nearest `point` (inside or outside the image)."""
        x, y = point
        w, h = image_size
        distances = {"left": abs(x), "right": abs(w - x), "up": abs(y), "down": abs(h - y)}
        return cls(min(distances, key=distances.get), point, image_size, point)

    def extension(self) -> Extension:
        """How far the edge has moved outward, snapped down to STEP pixels (inward drags add nothing)."""
        dx, dy = self.now[0] - self.start[0], self.now[1] - self.start[1]
        outward = {"left": -dx, "right": dx, "up": -dy, "down": dy}[self.side]
        amount = min(MAX_EXTENSION, max(0, int(outward) // STEP * STEP))
        return Extension(**{self.side: amount})

    def frame(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the grown frame in the image's coordinates."""
        ext = self.extension()
        w, h = ext.size(self.image_size)
        return (-ext.left, -ext.up, w, h)
