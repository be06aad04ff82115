"""A walk played on the canvas: the bar that takes the step scrubber's place while a walk is shown (frame
slider, play/pause, export as animated WebP or GIF or as a folder of PNGs with their parameters, which
history/animation.py writes).

The bar owns no view of its own: each frame is handed to `show` (the canvas's set_image). The frames are PIL
images with the requests that made them, in walk order.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QMenu, QSlider, QToolButton, QWidget

from sdstudio.engine.errors import SDStudioError
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.animation import DEFAULT_FRAME_MS, save_animation, save_frame
from sdstudio.ui.imageconv import pil_to_qimage


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


class WalkBar(QWidget):
    """Frame slider and play/pause over a walk's frames; hidden while no walk is shown."""

    def __init__(self, show, parent: QWidget | None = None, frame_ms: int = DEFAULT_FRAME_MS) -> None:
        super().__init__(parent)
        self.setObjectName("walkBar")
        self._show_image = show
        self.frames: list[Image.Image] = []
        self.requests: list[GenerationRequest] = []
        self.model_name = ""
        self._images = []  # QImages, converted once
        self.timer = QTimer(self, interval=frame_ms)
        self.timer.timeout.connect(self.advance)
        self.play_button = QToolButton(text="▶", autoRaise=True, toolTip="Play / pause the walk (loops)")
        self.play_button.clicked.connect(self.toggle)
        self.slider = QSlider(Qt.Orientation.Horizontal, toolTip="The walk's frames, start to end")
        self.slider.valueChanged.connect(self.show_frame)
        self.slider.sliderPressed.connect(self.pause)
        self.label = QLabel()
        self.label.setMinimumWidth(self.label.fontMetrics().horizontalAdvance("Frame 000/000"))
        self.export_button = QToolButton(text="Export", autoRaise=True, toolTip="Save the walk as an animation "
                                         "or as PNGs with their parameters")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.export_button)
        menu.addAction("Animated WebP…", lambda: self.export_dialog(".webp"))
        menu.addAction("GIF…", lambda: self.export_dialog(".gif"))
        menu.addAction("Folder of PNGs…", self.export_folder_dialog)
        self.export_button.setMenu(menu)
        self.status = QLabel()
        self.status.setProperty("role", "hint")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.addWidget(self.play_button)
        layout.addWidget(QLabel("Walk"))
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.label)
        layout.addWidget(self.export_button)
        layout.addWidget(self.status)
        self.hide()

    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    @property
    def active(self) -> bool:
        return bool(self.frames)

    def set_walk(self, frames: list[Image.Image], requests: list[GenerationRequest], model_name: str = "",
                 frame: int = 0, play: bool = True) -> None:
        """Show the walk from `frame` (playing or paused)."""
        if not frames or len(frames) != len(requests):
            raise ValueError("a walk needs one request per frame, and at least one frame")
        self.pause()
        self.frames, self.requests, self.model_name = list(frames), list(requests), model_name
        self._images = [pil_to_qimage(im) for im in frames]
        self.status.clear()
        self.slider.blockSignals(True)
        self.slider.setRange(0, len(frames) - 1)
        self.slider.setValue(min(max(frame, 0), len(frames) - 1))
        self.slider.blockSignals(False)
        self.show()
        self.show_frame(self.slider.value())
        if play:
            self.play()

    def clear(self) -> None:
        """No walk shown (the canvas shows something else)."""
        self.pause()
        self.frames, self.requests, self._images = [], [], []
        self.hide()

    def show_frame(self, k: int) -> None:
        if not self._images:
            return
        if self.slider.value() != k:
            self.slider.setValue(k)  # calls back here
            return
        self._show_image(self._images[k])
        self.label.setText(f"Frame {k + 1}/{len(self._images)}")

    def advance(self) -> None:
        self.show_frame((self.slider.value() + 1) % len(self._images))

    def play(self) -> None:
        if len(self._images) > 1:
            self.timer.start()
        self.play_button.setText("⏸" if self.playing else "▶")

    def pause(self) -> None:
        self.timer.stop()
        self.play_button.setText("▶")

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
