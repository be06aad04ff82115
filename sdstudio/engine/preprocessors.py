"""ControlNet preprocessors: one table, name → what turns a source image into the map a ControlNet reads.

Names are sd-webui-controlnet's (A1111) module names, so its infotext ("Module: canny") reads back here and
ours reads there. Each entry lists its settings (`Param`: A1111's sliders, with its defaults and ranges);
"resolution" is A1111's "Processor Res": the image is first scaled so its short side is that many pixels
(bicubic up, area down), and the map comes back at that size (the job's hint resize fits it to the image).

The weight-free ones run here (preprocessor_maps.py, numpy and Pillow). The ones that need a network run with
the user's annotator file from models/annotators (HED soft edges: annotator_hed.py; realistic and coarse
line art: annotator_lineart.py); the others (depth, pose, normals, ...) are listed too, never hidden:
`availability` says why they cannot run (no annotator file, or a network SD Studio does not run yet). This
module imports neither torch nor numpy, so history and the UI can read the table cheaply; the pixel work is
imported by `run`.

Interface used by the engine and the UI: `names()`, `run(name, image, params)`, `pairing(model_name)`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePath

from PIL import Image

from sdstudio import paths
from sdstudio.engine.errors import RequestError

NONE = "none"


@dataclass(frozen=True)
class Param:
    """One setting of a preprocessor: its key in `ControlUnit.preprocessor_params`, A1111's slider label, the
    default and the allowed range (inclusive); `whole` ones are whole numbers."""

    name: str
    label: str
    default: float
    low: float
    high: float
    whole: bool = False


RESOLUTION = Param("resolution", "Resolution", 512, 64, 2048, whole=True)


@dataclass(frozen=True)
class Preprocessor:
    """A table entry. `function` names the pixel function in `module` (None: the image is the map, or for a
    network, one SD Studio does not run yet); `sliders` are passed to it as keyword arguments; `annotators` are
    the weight files a network preprocessor needs (sd-webui-controlnet's names; passed as `files`), () for the
    weight-free ones."""

    name: str
    label: str
    function: str | None = None
    sliders: tuple[Param, ...] = ()
    resolution: bool = False
    annotators: tuple[str, ...] = ()
    keeps_alpha: bool = False
    module: str = "preprocessor_maps"

    @property
    def params(self) -> tuple[Param, ...]:
        """Every setting, "resolution" first when the entry has it."""
        return ((RESOLUTION,) if self.resolution else ()) + self.sliders


def _free(name: str, label: str, function: str | None, *sliders: Param, resolution: bool = True,
          keeps_alpha: bool = False) -> Preprocessor:
    return Preprocessor(name, label, function, tuple(sliders), resolution, (), keeps_alpha)


def _network(name: str, label: str, *files: str, runs: tuple[str, str] | None = None) -> Preprocessor:
    """A preprocessor that needs annotator weights; `runs` = (module, function) when SD Studio runs it."""
    module, function = runs or ("", None)
    return Preprocessor(name, label, function, (), True, tuple(files), module=module)


_TABLE: tuple[Preprocessor, ...] = (
    _free(NONE, "none (the image is the map)", None, resolution=False),
    _free("canny", "canny (edges)", "canny",
          Param("low", "Canny Low Threshold", 100, 0, 256, whole=True),  # sd-webui-controlnet's slider range
          Param("high", "Canny High Threshold", 200, 0, 256, whole=True),
          # Ours: A1111's cv2.Canny does not smooth, so 0 keeps its maps; a little helps on noisy photos.
          Param("sigma", "Gaussian Sigma", 0.0, 0.0, 8.0)),
    _free("invert", "invert (from white bg & black line)", "invert", resolution=False),
    _free("threshold", "threshold (bright → white)", "threshold",
          Param("level", "Binarization Threshold", 127, 0, 255, whole=True)),
    _free("binary", "binary (dark lines → white; 0 = automatic)", "binary",
          Param("level", "Binary Threshold", 0, 0, 255, whole=True)),
    _free("scribble_xdog", "scribble_xdog (scribble from an image)", "scribble_xdog",
          Param("level", "XDoG Threshold", 32, 1, 64, whole=True)),
    _free("lineart_standard", "lineart_standard (from white bg & black line)", "lineart_standard"),
    _free("tile_resample", "tile_resample (downsample)", "downsample",
          Param("rate", "Down Sampling Rate", 1.0, 1.0, 8.0), resolution=False),
    _free("blur_gaussian", "blur_gaussian", "blur", Param("sigma", "Sigma", 9.0, 0.01, 64.0)),
    _free("t2ia_color_grid", "t2ia_color_grid (pixelate)", "color_grid"),
    _free("recolor_luminance", "recolor_luminance (lightness)", "recolor_luminance",
          Param("gamma", "Gamma Correction", 1.0, 0.1, 2.0), resolution=False),
    _free("recolor_intensity", "recolor_intensity (brightest channel)", "recolor_intensity",
          Param("gamma", "Gamma Correction", 1.0, 0.1, 2.0), resolution=False),
    _free("shuffle", "shuffle (content shuffle)", "shuffle",
          Param("seed", "Seed", 0, 0, 2**32 - 1, whole=True), resolution=False),
    # The map keeps the image's alpha: its transparent pixels are the area to repaint (`repaint_area`).
    _free("inpaint_only", "inpaint_only (transparent = repaint)", None, resolution=False, keeps_alpha=True),
    _network("depth_midas", "depth_midas", "dpt_hybrid-midas-501f0c75.pt"),
    _network("depth_leres", "depth_leres", "res101.pth"),
    _network("openpose", "openpose (body)", "body_pose_model.pth"),
    _network("openpose_full", "openpose_full (body, hands, face)", "body_pose_model.pth", "hand_pose_model.pth",
             "facenet.pth"),
    _network("normal_bae", "normal_bae", "scannet.pt"),
    _network("softedge_hed", "softedge_hed", "ControlNetHED.pth", runs=("annotator_hed", "softedge")),
    _network("softedge_hedsafe", "softedge_hedsafe", "ControlNetHED.pth", runs=("annotator_hed", "softedge_safe")),
    _network("scribble_hed", "scribble_hed", "ControlNetHED.pth", runs=("annotator_hed", "scribble")),
    _network("softedge_pidinet", "softedge_pidinet", "table5_pidinet.pth"),
    _network("mlsd", "mlsd (straight lines)", "mlsd_large_512_fp32.pth"),
    _network("lineart_realistic", "lineart_realistic", "sk_model.pth", runs=("annotator_lineart", "lines")),
    _network("lineart_coarse", "lineart_coarse", "sk_model2.pth", runs=("annotator_lineart", "lines")),
    _network("lineart_anime", "lineart_anime", "netG.pth"),
    _network("seg_ofade20k", "seg_ofade20k (segmentation)", "250_16_swin_l_oneformer_ade20k_160k.pth"),
)
_BY_NAME = {entry.name: entry for entry in _TABLE}
# sd-webui-controlnet's older module ids, as its older infotext wrote them, → the names above.
ALIASES = {"depth": "depth_midas", "color": "t2ia_color_grid", "hed": "softedge_hed", "pidinet": "softedge_pidinet",
           "lineart": "lineart_realistic", "normal": "normal_bae", "oneformer_ade20k": "seg_ofade20k",
           "leres": "depth_leres",
           # Its inpaint modules share one map (the image, repaint area marked); they differ in how A1111 pastes
           # the result back afterwards, which is the generation's inpainting settings here.
           "inpaint": "inpaint_only", "inpaint_global_harmonious": "inpaint_only"}


def names() -> tuple[str, ...]:
    """Every preprocessor's name, runnable or not ("none" first)."""
    return tuple(entry.name for entry in _TABLE)


def canonical(name: str) -> str:
    """The table name for `name` (an A1111 alias or any case); RequestError when there is none."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in _BY_NAME:
        raise RequestError(f"unknown preprocessor {name.strip()[:60]!r}: use one of {', '.join(names())}")
    return key


def describe(name: str) -> Preprocessor:
    """The table entry of `name` (its label and settings); RequestError for an unknown name."""
    return _BY_NAME[canonical(name)]


def availability(name: str) -> str:
    """"" when the preprocessor can run; otherwise why not, in one line for the user."""
    entry = describe(name)
    if not entry.annotators:
        return ""
    folder = paths.annotators_dir()
    missing = [file for file in entry.annotators if not (folder / file).is_file()]
    if missing:
        return f"unavailable: no annotator file in {folder} ({', '.join(missing)})"
    if entry.function is None:
        return (f"unavailable: the annotator file is in {folder}, but SD Studio does not run the {entry.name} "
                "network yet")
    return ""


def defaults(name: str) -> tuple[tuple[str, float], ...]:
    """The preprocessor's settings at their defaults, as `ControlUnit.preprocessor_params` holds them."""
    return tuple((param.name, param.default) for param in describe(name).params)


def settings(name: str, params: Mapping[str, float] | Iterable[tuple[str, float]] = ()) -> dict[str, float]:
    """Every setting of `name`: the defaults with `params` over them. RequestError for a setting the entry
    does not have, or a value that is not a number in its range."""
    entry = describe(name)
    by_name = {param.name: param for param in entry.params}
    values = {param.name: param.default for param in entry.params}
    given = params.items() if isinstance(params, Mapping) else params
    for key, value in given:
        param = by_name.get(key)
        if param is None:
            known = ", ".join(by_name) or "none"
            raise RequestError(f"preprocessor {entry.name} has no setting {str(key)[:40]!r} (its settings: {known})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RequestError(f"{entry.name} {param.name} must be a number, got {str(value)[:40]!r}")
        if not param.low <= value <= param.high:
            raise RequestError(f"{entry.name} {param.name} {value:g} is out of range: use {param.low:g}..{param.high:g}")
        if param.whole and value != int(value):
            raise RequestError(f"{entry.name} {param.name} must be a whole number, got {value:g}")
        values[key] = int(value) if param.whole else float(value)
    return values


def run(name: str, image: Image.Image, params: Mapping[str, float] | Iterable[tuple[str, float]] = ()) -> Image.Image:
    """The control map of `image` (RGB; RGBA for inpaint_only). RequestError when the name is unknown, the
    preprocessor is unavailable (the reason says why) or a setting is wrong."""
    entry = describe(name)
    reason = availability(entry.name)
    if reason:
        raise RequestError(f"preprocessor {entry.name} is {reason}")
    values = settings(entry.name, params)
    if image.width < 1 or image.height < 1:
        raise RequestError("the control image is empty")
    if entry.keeps_alpha:
        return image.convert("RGBA")
    rgb = _flattened(image)
    if entry.resolution:
        rgb = _scaled(rgb, int(values.pop(RESOLUTION.name)))
    if entry.function is None:
        return rgb
    import importlib

    import numpy as np

    function = getattr(importlib.import_module(f"sdstudio.engine.{entry.module}"), entry.function)
    if entry.annotators:
        values["files"] = tuple(paths.annotators_dir() / file for file in entry.annotators)
    out = function(np.asarray(rgb), **values)
    return Image.fromarray(np.ascontiguousarray(out, dtype=np.uint8))


def repaint_area(control_map: Image.Image) -> Image.Image | None:
    """For an inpaint_only map (RGBA): an L mask, 255 where alpha < 128 (the area to repaint, which the hint
    marks with -1, sd-webui-controlnet's inpaint rule); None for a map without transparency."""
    if control_map.mode != "RGBA":
        return None
    return control_map.getchannel("A").point(lambda a: 255 if a < 128 else 0)


def _flattened(image: Image.Image) -> Image.Image:
    """RGB, with any transparency laid over white (sd-webui-controlnet's HWC3 rule for RGBA images)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _scaled(image: Image.Image, resolution: int) -> Image.Image:
    """The image scaled so its short side is `resolution` (A1111's processor resolution): each side rounded,
    bicubic when enlarging, area averaging when shrinking."""
    k = resolution / min(image.size)
    size = (max(1, round(image.width * k)), max(1, round(image.height * k)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BICUBIC if k > 1 else Image.Resampling.BOX)


# Model name → its usual preprocessor, first match wins (inpaint before the rest: "..._inpaint_canny" is an
# inpaint model). A keyword matches a word of the file's stem (split at anything but letters and digits) that
# starts or ends with it, so "normalbae", "dwpose" and "controlnethed" are recognised.
_PAIRINGS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("inpaint",), "inpaint_only"),
    (("recolor",), "recolor_luminance"),  # before "color"
    (("canny",), "canny"),
    (("lineart",), "lineart_standard"),
    (("scribble", "sketch", "doodle"), "scribble_xdog"),
    (("softedge", "hed", "pidi", "pidinet"), "softedge_hed"),
    (("tile", "blur"), "tile_resample"),
    (("shuffle",), "shuffle"),
    (("depth",), "depth_midas"),
    (("openpose", "pose"), "openpose_full"),
    (("normal",), "normal_bae"),
    (("mlsd",), "mlsd"),
    (("seg",), "seg_ofade20k"),
    (("color",), "t2ia_color_grid"),
)


def pairing(model_name: str) -> str:
    """The preprocessor that usually goes with a ControlNet, from its file name or path ("control_v11p_sd15_canny
    [abc123]" → canny); "none" when the name says nothing we know (the image is then used as the map)."""
    text = model_name.strip()
    text = re.sub(r"\s*\[[0-9a-fA-F]+\]$", "", text)  # an A1111 "name [hash]" label
    stem = PurePath(text.replace("\\", "/")).name.lower()
    stem = re.sub(r"\.(safetensors|ckpt|pth|pt|bin)$", "", stem)
    words = [word for word in re.split(r"[^a-z0-9]+", stem) if word]
    for keywords, preprocessor in _PAIRINGS:
        if any(word.startswith(key) or word.endswith(key) for word in words for key in keywords):
            return preprocessor
    return NONE
