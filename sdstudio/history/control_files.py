"""Re-running an image made with ControlNet: its units' model files found again on this machine, and whether
each unit has its image.

A file names a ControlNet only by name (our record: the file name; A1111's text: the stem, maybe with a
hash), never by path, so the file is looked up by that name in the models folder's ControlNet folder
(models/ControlNet, sd-webui-controlnet's), as file_parameters.py finds VAEs. The hash is not checked: that
would mean reading every candidate file whole.
"""

from __future__ import annotations

from pathlib import Path

from sdstudio import paths
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.control_parameters import MODEL_SUFFIXES
from sdstudio.history.record import file_name
from sdstudio.untrusted import quoted

CONTROLNET_FOLDER = "ControlNet"  # under the models folder, as paths.controlnet_dir()


def missing_control_image(request: GenerationRequest) -> str:
    """Why the request cannot be re-run for want of a ControlNet image ("" when every unit has one)."""
    for n, unit in enumerate(request.control_units):
        if unit.image is None:
            return f"its ControlNet unit {n + 1} image was not kept; choose one for that unit"
    return ""


def _matches(path: Path, name: str) -> bool:
    if path.name == name:
        return True
    return path.suffix.lower() in MODEL_SUFFIXES and path.stem == name


def with_control_models(request: GenerationRequest, models_dir: Path) -> tuple[GenerationRequest, str]:
    """The request with each unit's model pointing at its file in models_dir/ControlNet, or (names only, why
    not) for the first unit whose file is missing or ambiguous."""
    from sdstudio.history.file_parameters import checked_file  # it imports this module

    if not request.control_units:
        return request, ""
    folder = Path(models_dir) / CONTROLNET_FOLDER
    files = []
    # The user's folder, then the built-in ControlNets (the built-in model's companion), which a user file of
    # the same name shadows rather than making the name ambiguous.
    for root in (folder, paths.builtin_controlnet_dir()):
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            try:
                found = checked_file(path, [root])
            except OSError:
                continue  # folders, pipes, links leading out of the folder
            if root == folder or not any(f.name == found.name for f in files):
                files.append(found)
    units = []
    for n, unit in enumerate(request.control_units):
        name = file_name(unit.model)
        found = [path for path in files if _matches(path, name)]
        if len(found) != 1:
            shown = quoted(name, 120)
            where = f"several files in {folder} are named {shown}" if found else f"{shown} is not in {folder}"
            problem = (f"this image was made with the ControlNet {shown} (unit {n + 1}), but {where}; put it there "
                       "or choose one")
            names_only = tuple(u.replace(model=file_name(u.model)) for u in request.control_units)
            return request.replace(control_units=names_only), problem
        units.append(unit.replace(model=str(found[0])))
    return request.replace(control_units=tuple(units)), ""
