"""The one way to read what an image file says about how it was made: File › Open and drag-drop,
`generate --from` and `params`, the history store's re-run and the index all call `read_file_parameters`.

An image may carry our ``sdstudio`` record (the full request; init image and mask stored as sidecar
files beside it, see history/record.py and history/layout.py), A1111's ``parameters`` text (also
written by most other tools), both, a ComfyUI graph (history/comfyui.py), or nothing (then it is simply a picture, e.g.
for use as an init image). The record wins over the text: it holds fields A1111 does not know.

A file is someone else's input, so nothing it names is opened as named. Sidecars are looked up only as
plain file names, in the image's own folder or the history's folder of the entry's day: a name holding a
path (``../x.png``, ``/etc/passwd``) is refused, never opened. Model, VAE and TAESD are found by file
name (and hash) in the models folder or the built-in models folder; a path in an old record is used only
when it lies inside one of them. Every file opened is first checked to be a regular file (a FIFO or a
device would block the reader forever) inside the folder it belongs to (a symlink cannot lead out).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from sdstudio import paths
from sdstudio.engine.errors import ModelNotFound, RequestError, SDStudioError
from sdstudio.engine.model_files import builtin_model_path, resolve_model
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.comfyui import ComfyParameters, comfyui_parameters
from sdstudio.history.control_files import missing_control_image, with_control_models
from sdstudio.history.hires_parameters import checkpoint_name
from sdstudio.history.layout import Layout
from sdstudio.history.parameters import (
    a1111_mode,
    lenient_request,
    nearest_choice,
    parse_parameters,
    request_and_problem,
    with_nearest,
)
from sdstudio.history.png import open_image, read_image_text, read_text_chunks
from sdstudio.history.record import Record, file_name, record_from_json
from sdstudio.untrusted import printable, quoted

NO_PARAMETERS = "holds no generation parameters"


class RefusedFile(SDStudioError, OSError):
    """A file that must not be opened: not a regular file, or outside the folder it belongs to. An OSError
    too, so every reader that handles an unreadable file handles this one the same way."""


def checked_file(path: Path, folders: Sequence[Path] = ()) -> Path:
    """`path` when it is a regular file (symlinks followed) lying inside one of `folders` (any folder when
    none are given); RefusedFile otherwise, FileNotFoundError when it is missing."""
    path = Path(path)
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise RefusedFile(f"{path.name} is not a regular file (a folder, pipe or device); refused")
    if folders:
        real = path.resolve()
        if not any(real.is_relative_to(Path(folder).resolve()) for folder in folders):
            raise RefusedFile(f"{path.name} lies outside {', '.join(str(f) for f in folders)}; refused")
    return path


def _is_checked_file(path: Path, folders: Sequence[Path]) -> bool:
    try:
        checked_file(path, folders)
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class FileParameters:
    """What one image file holds.

    `request` is the request read from the file, as complete as it could be made: init image and mask
    restored from the sidecars, `model` resolved on this machine when a models folder was given. It is
    None when the file has no parameters or values SD Studio cannot read (a bad number); a sampler or
    schedule SD Studio lacks is kept as written, with `problem` naming our nearest. `problem` says why the file cannot be re-run as it is ("" when it can); `model_problem` says the model it
    names is not here (then `request.model` is not usable). `rerun_request()` checks both.
    """

    path: Path
    image: Image.Image | None = field(default=None, repr=False)  # None when read with pixels=False
    text: str = ""  # the raw A1111 parameters text
    params: dict[str, str] = field(default_factory=dict)
    record: Record | None = None
    request: GenerationRequest | None = None
    model_name: str = ""
    mode: str = ""  # how the image was made: txt2img, img2img or inpaint ("" without parameters)
    problem: str = ""
    model_problem: str = ""
    refused: tuple[str, ...] = ()  # parts of the file not read: text chunks over the size limits, a bad record

    @property
    def has_parameters(self) -> bool:
        return bool(self.text) or self.record is not None

    def listing_request(self) -> GenerationRequest | None:
        """The values to list the file by (the index, a gallery): the request, or for a text we cannot
        run, its raw names kept for display. None without parameters."""
        if self.request is not None:
            return self.request
        return lenient_request(self.params) if self.text else None

    def rerun_request(self) -> GenerationRequest:
        """The request that re-creates this image; RequestError or ModelNotFound when it cannot be re-run."""
        if self.request is None or self.problem:
            raise RequestError(f"{self.path.name}: {self.problem}")
        if self.model_problem:
            raise ModelNotFound(f"{self.path.name}: {self.model_problem}")
        return self.request.replace(walk_id="")  # a re-run of a walk's frame is not part of that walk

    def with_nearest_sampler(self) -> tuple[FileParameters, str] | None:
        """This file with a sampler or schedule SD Studio lacks replaced by our nearest (parameters.nearest_choice),
        for a re-run the user chose, and the substitution in words ("sampler 'DEIS' → DPM++ 2M"). None when
        there is nothing to substitute or something else keeps the file from running."""
        if self.request is None or not self.problem or self.record is not None:
            return None
        choice = nearest_choice(self.request.sampler, self.request.scheduler)
        if choice is None:
            return None
        sampler, scheduler, change = choice
        request = self.request.replace(sampler=sampler, scheduler=scheduler)
        return dataclasses.replace(self, request=request, params=with_nearest(self.params), problem=""), change


def read_file_parameters(
    path: Path, *, pixels: bool = True, models_dir: Path | None = None, history_root: Path | None = None
) -> FileParameters:
    """Read `path` (PNG, JPEG or WebP). OSError (or PIL's errors) when it is not a readable image;
    ImageFileError (a ValueError) when it has more pixels than Pillow's bomb limit or Pillow refuses its text.

    pixels=False reads only the parameters: no image is decoded and no sidecar is opened (indexing).
    models_dir: look up the model the file names there (built-in model included); None leaves it as read.
    history_root: the outputs folder, where the sidecars of a copied history PNG are also looked for.
    """
    path = checked_file(Path(path))
    image = None
    if pixels:
        with open_image(path) as opened:
            image = opened.convert("RGB")
    found = read_image_text(path)
    text, data = found.parameters or "", found.record
    params = parse_parameters(text) if text else {}
    refused = found.problems
    record = None
    if data is not None:
        try:
            record = record_from_json(data)
        except ValueError as e:  # then the A1111 text is used, as any other tool would
            refused += (f"its sdstudio record is refused: {e}",)
    problem = ""
    if record is not None:
        request: GenerationRequest | None = record.request
        model_name, mode = record.model_name, record.made_from
        if pixels:
            request, problem = _with_sidecars(record, _sidecar_folders(path, record, history_root))
    elif text:
        model_name, mode = params.get("Model", ""), a1111_mode(params)
        try:  # a sampler we lack keeps its name, with the problem naming our nearest
            request, problem = request_and_problem(params)
        except RequestError as e:
            request, problem = None, str(e)
    elif (comfy := _comfyui(path)) is not None:
        text, params, model_name, mode = comfy.text, comfy.params, comfy.params.get("Model", ""), "txt2img"
        request, problem = None, comfy.problem
        if not comfy.problem:
            try:
                request, problem = request_and_problem(params)
            except RequestError as e:
                problem = str(e)
    else:
        return FileParameters(path, image, problem=refused[0] if refused else NO_PARAMETERS, refused=refused)
    if request is not None and pixels and not problem:
        problem = missing_control_image(request)
    model_problem = ""
    if request is not None and models_dir is not None:
        request, model_problem = _with_model(request, model_name, record is not None, models_dir)
        request, parts_problem = _with_parts(request, models_dir)
        request, hires_problem = _with_hires_checkpoint(request, models_dir)
        request, control_problem = with_control_models(request, models_dir)
        model_problem = model_problem or parts_problem or hires_problem or control_problem
    elif request is not None:
        # Not looked up: names only, so no caller can open a path that a file wrote.
        request = request.replace(**{name: file_name(getattr(request, name))
                                     for name in _PARTS + ("model", "hires_checkpoint")})
        request = request.replace(control_units=tuple(u.replace(model=file_name(u.model)) for u in request.control_units))
    return FileParameters(
        path, image, text, params, record, request, model_name, mode, problem, model_problem, refused
    )


def _comfyui(path: Path) -> ComfyParameters | None:
    """A ComfyUI graph's parameters, for a PNG that has no A1111 text nor record (history/comfyui.py)."""
    with open(path, "rb") as file:
        return comfyui_parameters(read_text_chunks(file).texts)


def is_plain_name(name: str) -> bool:
    """A bare PNG file name: no folder part, no '..', no drive, nothing a path could escape with."""
    return (
        bool(name)
        and name not in (".", "..")
        and not any(c in name for c in "/\\:\0")
        and Path(name).name == name
        and name.lower().endswith(".png")
    )


def _sidecar_folders(path: Path, record: Record, history_root: Path | None) -> list[Path]:
    folders = [path.parent]
    if history_root is not None:
        folders += [f for f in Layout(Path(history_root)).day_folders(record.created) if f != path.parent]
    return folders


def _with_sidecars(record: Record, folders: list[Path]) -> tuple[GenerationRequest, str]:
    """The record's request with its init image, mask and ControlNet images read back, and the first problem met."""
    images: dict[str, Image.Image] = {}
    problems: list[str] = []
    wanted = [("init", record.init_file, "RGB"), ("mask", record.mask_file, "L")]
    wanted += [(f"ControlNet unit {n + 1}", name, None) for n, name in enumerate(record.control_files)]
    for kind, name, mode in wanted:
        if not name:
            continue
        image, problem = _sidecar(kind, name, mode, folders)
        if problem:
            problems.append(problem)
        else:
            images[kind] = image
    if not problems and record.made_from != "txt2img" and "init" not in images:
        problems.append(f"it was made by {record.made_from} from an init image that was not kept; choose an input image")
    units = tuple(unit.replace(image=images.get(f"ControlNet unit {n + 1}"))
                  for n, unit in enumerate(record.request.control_units))
    request = record.request.replace(init_image=images.get("init"), mask=images.get("mask"), control_units=units)
    return request, problems[0] if problems else ""


def _sidecar(kind: str, name: str, mode: str | None, folders: list[Path]) -> tuple[Image.Image | None, str]:
    """(the sidecar image, "") or (None, why not). mode None keeps RGBA (an inpaint unit's mask is its alpha)."""
    if not is_plain_name(name):
        return None, f"its {kind} image is named {quoted(name)}, which is not a plain file name; refused"
    present = [folder / name for folder in folders if os.path.lexists(folder / name)]
    name = printable(name, 200, multiline=False)  # from the file: shown escaped
    if not present:
        instead = "choose one for that unit" if kind.startswith("ControlNet") else "choose an input image"
        return None, f"its {kind} image {name} is missing; put it back beside the image or {instead}"
    try:
        found = checked_file(present[0], [present[0].parent])
        with open_image(found) as opened:
            return opened.convert(mode or ("RGBA" if "A" in opened.getbands() else "RGB")), ""
    except (OSError, ValueError) as e:
        return None, f"its {kind} image {name} cannot be read ({printable(e, multiline=False)})"


def _model_folders(models_dir: Path) -> list[Path]:
    return [Path(models_dir), paths.builtin_models_dir()]


def _with_model(
    request: GenerationRequest, model_name: str, ours: bool, models_dir: Path
) -> tuple[GenerationRequest, str]:
    """The request with `model` pointing at a checkpoint on this machine, or the reason it cannot.

    Our own record's "" is the built-in model, and a path (old records) inside the models folders is used
    as is; anything else, a record's file name and every A1111 text (which names no path), is looked up by
    hash, then name.
    """
    if ours and (not request.model or _is_checked_file(Path(request.model), _model_folders(models_dir))):
        return request, ""
    name = model_name or (Path(file_name(request.model)).stem if request.model else "")
    try:
        found = resolve_model(name, request.model_hash, models_dir)
    except ModelNotFound as e:
        return request.replace(model=file_name(request.model)), str(e)
    return request.replace(model="" if found == builtin_model_path() else str(found)), ""


_PARTS = ("vae", "taesd")


def _with_hires_checkpoint(request: GenerationRequest, models_dir: Path) -> tuple[GenerationRequest, str]:
    """The request with its hires checkpoint (a name, or a path in an old record) found in the models folders
    by name and hash, as the model is; or the reason it cannot be."""
    written = request.hires_checkpoint
    if not written or _is_checked_file(Path(written), _model_folders(models_dir)):
        return request, ""
    try:
        found = resolve_model(checkpoint_name(written), request.hires_checkpoint_hash, models_dir)
    except ModelNotFound as e:
        return request.replace(hires_checkpoint=file_name(written)), f"hires checkpoint: {e}"
    return request.replace(hires_checkpoint=str(found)), ""


def _with_parts(request: GenerationRequest, models_dir: Path) -> tuple[GenerationRequest, str]:
    """The request with its VAE and TAESD found by file name in the models folders, or the reason not."""
    folders = _model_folders(models_dir)
    changes: dict[str, str] = {}
    for part in _PARTS:
        written = getattr(request, part)
        if not written or _is_checked_file(Path(written), folders):
            continue
        name = file_name(written)
        found = sorted({p for folder in folders if folder.is_dir() for p in folder.rglob("*")
                        if p.name == name and _is_checked_file(p, [folder])})
        if len(found) != 1:
            shown = quoted(name, 120)
            where = f"several files in {models_dir} are named {shown}" if found else f"{shown} is not in {models_dir}"
            problem = f"this image was made with the {part.upper()} file {shown}, but {where}; put it there or choose one"
            return request.replace(**{p: file_name(getattr(request, p)) for p in _PARTS}), problem
        changes[part] = str(found[0])
    return request.replace(**changes), ""
