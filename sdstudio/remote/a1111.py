"""Our GenerationRequest as A1111's /sdapi/v1/txt2img or /img2img JSON, and its answer back as a result.

Field names follow AUTOMATIC1111 `modules/api/models.py` (StableDiffusionProcessingTxt2Img / Img2Img as the
API exposes them) and `modules/processing.py`. Settings that are not request fields go in `override_settings`
(A1111's option keys: sd_model_checkpoint, sd_vae, CLIP_stop_at_last_layers, uni_pc_variant). What the request
asks for that the protocol cannot carry is refused with a RequestError, never dropped.

The answer is {"images": [base64 PNG], "parameters": {...}, "info": "<JSON string>"}; its info holds one A1111
infotext per image, which we parse back (history/parameters.py) so history keeps what the server really did.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from typing import Any

from PIL import Image

from sdstudio.engine.errors import RequestError
from sdstudio.engine.names import SCHEDULER_LABELS
from sdstudio.engine.request import GenerationRequest, GenerationResult
from sdstudio.history.parameters import parse_parameters, request_and_problem
from sdstudio.history.record import file_name

# A1111's img2img resize_mode 1, "Crop and resize": cover the size, crop the centre (our geometry.fit).
CROP_AND_RESIZE = 1
INPAINT_FILL_ORIGINAL = 1  # A1111's inpainting_fill "original": start from the init image's latents
# Request fields the infotext does not carry: kept from the request we sent.
_LOCAL_FIELDS = ("init_image", "mask", "model", "vae", "taesd", "prediction", "parent_id", "walk_id",
                 "tiled_vae", "control_units")


def endpoint(request: GenerationRequest) -> str:
    return "txt2img" if request.init_image is None else "img2img"


def payload(request: GenerationRequest) -> dict[str, Any]:
    """The JSON body for `endpoint(request)`; RequestError for what an A1111 server cannot be asked."""
    _refuse_unsupported(request)
    body: dict[str, Any] = {
        "prompt": request.prompt, "negative_prompt": request.negative_prompt,
        "seed": request.seed, "subseed": request.subseed, "subseed_strength": request.subseed_strength,
        "sampler_name": "UniPC" if request.sampler.startswith("UniPC") else request.sampler,
        "scheduler": SCHEDULER_LABELS.get(request.scheduler, request.scheduler),
        "steps": request.steps, "cfg_scale": request.cfg_scale,
        "width": request.width, "height": request.height,
        "batch_size": request.batch_size, "n_iter": 1,
        "send_images": True, "save_images": False, "do_not_save_grid": True,
        "override_settings": _overrides(request),
        # Keep the model the job switched to (A1111 would reload the previous one after every job).
        "override_settings_restore_afterwards": False,
    }
    if request.seed_resize_from is not None:
        body["seed_resize_from_w"], body["seed_resize_from_h"] = request.seed_resize_from
    if request.init_image is not None:
        body.update(init_images=[encode_png(request.init_image.convert("RGB"))], resize_mode=CROP_AND_RESIZE,
                    denoising_strength=request.strength)
        if request.mask is not None:
            body.update(mask=encode_png(request.mask.convert("L")), mask_blur=request.mask_blur,
                        inpainting_fill=INPAINT_FILL_ORIGINAL, inpaint_full_res=request.only_masked,
                        inpaint_full_res_padding=request.only_masked_padding, inpainting_mask_invert=0)
    elif request.hires:
        body.update(enable_hr=True, denoising_strength=request.strength, hr_scale=request.hires_scale,
                    hr_resize_x=request.hires_resize_w, hr_resize_y=request.hires_resize_h,
                    hr_upscaler=request.hires_upscaler, hr_second_pass_steps=request.hires_steps,
                    hr_prompt=request.hires_prompt, hr_negative_prompt=request.hires_negative_prompt)
        if request.hires_sampler:
            body["hr_sampler_name"] = request.hires_sampler
        if request.hires_scheduler:
            body["hr_scheduler"] = SCHEDULER_LABELS.get(request.hires_scheduler, request.hires_scheduler)
        if request.hires_cfg_scale:
            body["hr_cfg"] = request.hires_cfg_scale  # Forge's field; A1111 has no hires CFG
    return body


def _overrides(request: GenerationRequest) -> dict[str, Any]:
    settings: dict[str, Any] = {"CLIP_stop_at_last_layers": request.clip_skip}
    if request.model:
        # A path of this computer means nothing there: its file name is one of A1111's checkpoint aliases.
        # A server's own title ("x.safetensors [hash]", from its model list) goes as it is.
        model = request.model
        settings["sd_model_checkpoint"] = file_name(model) if os.path.isabs(model) else model
    if request.vae:
        settings["sd_vae"] = file_name(request.vae)
    if request.sampler.startswith("UniPC"):
        settings["uni_pc_variant"] = "bh2" if request.sampler == "UniPC bh2" else "bh1"
    return settings


def _refuse_unsupported(request: GenerationRequest) -> None:
    refused = [what for what, asked in (
        ("ControlNet units", bool(request.control_units)),
        ("prompt blending", request.blend_strength != 0),
        ("draft decode", request.draft_decode),
        ("a prediction override", bool(request.prediction)),
    ) if asked]
    if refused:
        raise RequestError(f"{', '.join(refused)} cannot be sent to an A1111-compatible server; run this job "
                           "on this computer")


def encode_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(text: str, what: str) -> Image.Image:
    """A base64 image (a "data:image/png;base64," prefix allowed, as newer servers send previews) as RGB.
    PIL's decompression-bomb limit applies; ValueError says what could not be read."""
    if not isinstance(text, str):
        raise ValueError(f"{what} is not a base64 string")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        image = Image.open(io.BytesIO(base64.b64decode(text, validate=False)))
        image.load()
    except (binascii.Error, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{what} is not an image: {exc}") from None
    return image.convert("RGB")


def result_from_response(answer: Any, request: GenerationRequest, backend: str,
                         seconds: float) -> GenerationResult:
    """The server's answer to `payload(request)` as our result; ValueError when it is not A1111-shaped."""
    if not isinstance(answer, dict) or not isinstance(answer.get("images"), list):
        raise ValueError("the answer has no images list")
    info = answer.get("info", "{}")
    try:
        info = json.loads(info) if isinstance(info, str) else info
    except ValueError:
        raise ValueError("its info is not JSON") from None
    info = info if isinstance(info, dict) else {}
    first = info.get("index_of_first_image", 0)
    first = first if isinstance(first, int) and 0 <= first <= len(answer["images"]) else 0
    encoded = answer["images"][first:first + request.batch_size]
    if not encoded:
        raise ValueError("it returned no image")
    images = [decode_image(text, f"image {n + 1}") for n, text in enumerate(encoded)]
    texts = info.get("infotexts")
    texts = texts[first:] if isinstance(texts, list) else []
    sent = request.image_requests(len(images))
    requests = [_written(sent[n], texts[n] if n < len(texts) else None, info, n) for n in range(len(images))]
    model_name = info.get("sd_model_name")
    return GenerationResult(images, requests, model_name if isinstance(model_name, str) else "", seconds,
                            {"backend": backend})


def _written(sent: GenerationRequest, infotext: Any, info: dict, index: int) -> GenerationRequest:
    """What made image `index`: the server's infotext read back, with the fields it cannot hold from `sent`;
    without a readable infotext, `sent` with the server's seeds (info's all_seeds / all_subseeds)."""
    if isinstance(infotext, str) and infotext.strip():
        try:
            parsed, _problem = request_and_problem(parse_parameters(infotext))
        except RequestError:
            parsed = None
        if parsed is not None:
            return parsed.replace(**{name: getattr(sent, name) for name in _LOCAL_FIELDS})
    seeds, subseeds = info.get("all_seeds"), info.get("all_subseeds")
    if isinstance(seeds, list) and index < len(seeds) and isinstance(seeds[index], int):
        sent = sent.replace(seed=seeds[index])
    if isinstance(subseeds, list) and index < len(subseeds) and isinstance(subseeds[index], int):
        sent = sent.replace(subseed=subseeds[index])
    return sent
