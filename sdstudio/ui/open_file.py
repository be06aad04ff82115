"""Opening an image file in the main window, and the one-click offer to use SD Studio's nearest sampler.

An image made with a sampler or schedule other tools have and SD Studio lacks (names.NEAREST_*) is read as
written and the banner names our nearest; its button loads (or re-runs) the parameters with the nearest
substituted and says which substitution was made. Nothing switches sampler without the user's click.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from sdstudio import paths
from sdstudio.engine.errors import SDStudioError
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.file_parameters import FileParameters, read_file_parameters
from sdstudio.history.parameters import nearest_choice
from sdstudio.ui.imageconv import pil_to_qimage
from sdstudio.ui.model_list import is_model_file
from sdstudio.ui.save_image import ImageSource

if TYPE_CHECKING:  # the window imports this module
    from sdstudio.ui.main_window import MainWindow


def open_image(window: MainWindow, path: str) -> None:
    """An image with parameters (ours, A1111's, ComfyUI exports) is shown and its parameters loaded, ready to
    re-run: our img2img/inpainting images bring back their input image and mask, and the model is looked up in
    the models folder. Any other image becomes the input image for img2img/inpainting. A file is not a
    history entry, so what is made from it has no parent."""
    name = Path(path).name
    banner = window.canvas_panel.banner
    if is_model_file(path):  # a model dropped on the canvas
        window.add_model(path)
        return
    try:
        found = read_file_parameters(Path(path), models_dir=paths.models_dir(), history_root=paths.outputs_dir())
    except (OSError, SyntaxError, ValueError) as exc:
        banner.show_error(f"Cannot open {name}: {exc}")
        return
    if found.request is None:
        if found.has_parameters:
            banner.show_error(f"{name}: {found.problem}; opened as an input image")
        window.replace_input(pil_to_qimage(found.image))
        return
    found = _without_parent(found)
    if not window.load_parameters(found.request, found.model_problem):
        return
    window.show_image(pil_to_qimage(found.image), ImageSource(file=Path(path)))
    if found.problem:  # after load_parameters, so the banner names every problem
        also = f"; {found.model_problem}" if found.model_problem else ""
        offer_nearest(window, found, f"{name}: {found.problem}{also}")


def _without_parent(found: FileParameters) -> FileParameters:
    return dataclasses.replace(found, request=found.request.replace(parent_id=""))


def offer_nearest(window: MainWindow, found: FileParameters, message: str, rerun_parent: str | None = None) -> None:
    """Show `message` on the banner; when `found` can run with our nearest sampler/schedule, with a button
    that loads its parameters so (or re-runs it, recording `rerun_parent` as the parent, when that is given)
    and then says which substitution was made."""
    banner = window.canvas_panel.banner
    nearest = found.with_nearest_sampler()
    if nearest is None:
        banner.show_error(message)
        return
    substituted, change = nearest

    def use() -> None:
        if rerun_parent is not None:
            try:
                request = substituted.rerun_request()
            except SDStudioError as exc:
                banner.show_error(f"Cannot re-run that entry: {exc}")
                return
            window.submit_request(request.replace(parent_id=rerun_parent))
            banner.show_error(f"Re-running with SD Studio's nearest: {change}.")
        elif window.load_parameters(substituted.request, substituted.model_problem):
            also = f" {substituted.model_problem}" if substituted.model_problem else ""
            banner.show_error(f"Loaded with SD Studio's nearest: {change}.{also}")

    sampler = substituted.request.sampler
    banner.show_error(message, f"Re-run with {sampler}" if rerun_parent is not None else f"Use {sampler}", use)


def show_job_error(window: MainWindow, message: str, request: GenerationRequest | None) -> None:
    """A failed job's message; when it failed on a sampler or schedule SD Studio lacks (loaded from an image
    and run without choosing), with a button that puts our nearest into the panel, saying which."""
    banner = window.canvas_panel.banner
    nearest = nearest_choice(request.sampler, request.scheduler) if request is not None else None
    if nearest is None:
        banner.show_error(message)
        return
    sampler, scheduler, change = nearest

    def use() -> None:
        window.state.sampler, window.state.scheduler = sampler, scheduler
        window.panel.refresh()
        banner.show_error(f"Now using SD Studio's nearest: {change}. Press Generate to run it.")

    banner.show_error(message, f"Use {sampler}", use)
