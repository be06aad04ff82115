"""A walk's frames on screen: a frame slider, play/pause, and export as animated WebP or GIF or as a folder of
PNGs with their parameters (history/animation.py writes all three).

The frames are PIL images with the requests that made them (engine/walk.py), in walk order.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.errors import SDStudioError
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.animation import DEFAULT_FRAME_MS, save_animation, save_frame
from sdstudio.ui.imageconv import pil_to_qimage

DISPLAY_SIDE = 384  # the frame is scaled to fit this box; the built-in model's 64 px frames show at 6x


def export_animation(path: Path, frames: list[Image.Image], frame_ms: int) -> Path:
    """The frames as an animated WebP or GIF (by the suffix); SDStudioError when it cannot be written."""
    try:
        return save_animation(Path(path), frames, frame_ms)
    except OSError as exc:
        raise SDStudioError(f"{path}: cannot be saved ({exc.strerror or exc})") from None


def export_folder(folder: Path, frames: list[Image.Image], requests: list[GenerationRequest],
                  model_name: str) -> list[Path]:
    """Each frame as a PNG with its parameters, numbered on from what `folder` holds."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SDStudioError(f"{folder}: cannot be made ({exc.strerror or exc})") from None
    return [save_frame(folder, im, r, model_name) for im, r in zip(frames, requests, strict=True)]


class WalkPlayer(QDialog):
    """Plays `frames` (made by `requests`) in a loop; the slider picks one, and stops the playback."""

    def __init__(self, frames: list[Image.Image], requests: list[GenerationRequest], model_name: str = "",
                 parent: QWidget | None = None, frame_ms: int = DEFAULT_FRAME_MS) -> None:
        super().__init__(parent)
        if not frames or len(frames) != len(requests):
            raise ValueError("a walk player needs one request per frame, and at least one frame")
        self.frames, self.requests, self.model_name = frames, requests, model_name
        self.setWindowTitle(f"Walk: {len(frames)} frames")
        self._pixmaps = [QPixmap.fromImage(pil_to_qimage(im)) for im in frames]
        self.view = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.view.setMinimumSize(DISPLAY_SIDE, DISPLAY_SIDE)
        self.slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=len(frames) - 1)
        self.slider.valueChanged.connect(self.show_frame)
        self.slider.sliderPressed.connect(self.pause)
        self.label = QLabel()
        self.play_button = QPushButton("Pause")
        self.play_button.clicked.connect(self.toggle)
        self.timer = QTimer(self, interval=frame_ms)
        self.timer.timeout.connect(self.advance)
        buttons = QHBoxLayout()
        buttons.addWidget(self.play_button)
        for text, slot in (("Export WebP…", lambda: self.export_dialog(".webp")),
                           ("Export GIF…", lambda: self.export_dialog(".gif")),
                           ("Export PNG folder…", self.export_folder_dialog)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            buttons.addWidget(button)
        self.status = QLabel()
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        row = QHBoxLayout()
        row.addWidget(self.slider, 1)
        row.addWidget(self.label)
        layout.addLayout(row)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        self.show_frame(0)
        self.play()

    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    def show_frame(self, k: int) -> None:
        if self.slider.value() != k:
            self.slider.setValue(k)  # calls back here
            return
        pixmap = self._pixmaps[k]
        self.view.setPixmap(pixmap.scaled(DISPLAY_SIDE, DISPLAY_SIDE, Qt.AspectRatioMode.KeepAspectRatio,
                                          Qt.TransformationMode.FastTransformation))
        self.label.setText(f"{k + 1}/{len(self.frames)}")

    def advance(self) -> None:
        self.show_frame((self.slider.value() + 1) % len(self.frames))

    def play(self) -> None:
        if len(self.frames) > 1:
            self.timer.start()
        self.play_button.setText("Pause" if self.playing else "Play")

    def pause(self) -> None:
        self.timer.stop()
        self.play_button.setText("Play")

    def toggle(self) -> None:
        self.pause() if self.playing else self.play()

    # --- export ---------------------------------------------------------------------------------------
    def export_animation(self, path: Path) -> Path:
        return export_animation(path, self.frames, self.timer.interval())

    def export_folder(self, folder: Path) -> list[Path]:
        return export_folder(folder, self.frames, self.requests, self.model_name)

    def export_dialog(self, suffix: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export walk", f"walk{suffix}", f"*{suffix}")
        if path:
            self._report(lambda: f"Saved {self.export_animation(Path(path)).name}")

    def export_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export the frames as PNGs into")
        if folder:
            self._report(lambda: f"Saved {len(self.export_folder(Path(folder)))} PNGs in {folder}")

    def _report(self, action) -> None:
        try:
            self.status.setText(action())
        except SDStudioError as exc:
            self.status.setText(str(exc))

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        self.timer.stop()
        super().closeEvent(event)
