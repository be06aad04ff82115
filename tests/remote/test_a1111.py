import base64
import io
import json

import pytest
from PIL import Image

from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import ControlUnit, GenerationRequest
from sdstudio.remote import a1111


def decoded(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def test_txt2img_fields_use_a1111_names_and_settings_go_to_override_settings():
    request = GenerationRequest(prompt="a fox", negative_prompt="blur", steps=12, cfg_scale=6.5,
                                sampler="DPM++ 2M", scheduler="karras", seed=42, subseed=7,
                                subseed_strength=0.25, width=320, height=448, batch_size=2,
                                clip_skip=2, model="/home/ann/models/fox.safetensors",
                                seed_resize_from_w=256, seed_resize_from_h=384)
    assert a1111.endpoint(request) == "txt2img"
    body = a1111.payload(request)
    expected = {"prompt": "a fox", "negative_prompt": "blur", "steps": 12, "cfg_scale": 6.5,
                "sampler_name": "DPM++ 2M", "scheduler": "Karras", "seed": 42, "subseed": 7,
                "subseed_strength": 0.25, "width": 320, "height": 448, "batch_size": 2}
    assert {k: body[k] for k in expected} == expected
    # A path means nothing on the server: its file name is one of A1111's checkpoint aliases.
    assert body["override_settings"] == {"CLIP_stop_at_last_layers": 2,
                                         "sd_model_checkpoint": "fox.safetensors"}
    assert (body["seed_resize_from_w"], body["seed_resize_from_h"]) == (256, 384)
    assert "init_images" not in body and "enable_hr" not in body
    json.dumps(body)  # all JSON


def test_a_server_title_goes_as_it_is_and_unipc_bh2_is_a1111s_variant_option():
    body = a1111.payload(GenerationRequest(model="sub/fox.safetensors [0123456789]", sampler="UniPC bh2"))
    assert body["override_settings"]["sd_model_checkpoint"] == "sub/fox.safetensors [0123456789]"
    assert body["sampler_name"] == "UniPC" and body["override_settings"]["uni_pc_variant"] == "bh2"


def test_inpaint_sends_init_image_and_mask_as_png_base64_with_its_settings():
    init = Image.new("RGB", (64, 48), (200, 10, 30))
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (10, 10, 30, 30))
    request = GenerationRequest(init_image=init, mask=mask, strength=0.6, mask_blur=7, only_masked=True,
                                only_masked_padding=12)
    assert a1111.endpoint(request) == "img2img"
    body = a1111.payload(request)
    assert decoded(body["init_images"][0]).tobytes() == init.tobytes()
    assert decoded(body["mask"]).convert("L").tobytes() == mask.tobytes()
    assert (body["denoising_strength"], body["mask_blur"], body["inpaint_full_res"],
            body["inpaint_full_res_padding"], body["resize_mode"]) == (0.6, 7, True, 12, 1)


def test_hires_fields_are_sent_only_for_hires():
    body = a1111.payload(GenerationRequest(hires=True, hires_scale=1.5, hires_upscaler="Lanczos",
                                           hires_steps=8,
                                           strength=0.45, hires_sampler="Euler", hires_scheduler="normal"))
    assert (body["enable_hr"], body["hr_scale"], body["hr_upscaler"], body["hr_second_pass_steps"],
            body["denoising_strength"], body["hr_sampler_name"], body["hr_scheduler"]) == (
        True, 1.5, "Lanczos", 8, 0.45, "Euler", "Normal")
    assert "hr_cfg" not in body


@pytest.mark.parametrize("request_", [
    GenerationRequest(control_units=(ControlUnit(model="c.safetensors"),)),
    GenerationRequest(blend_prompt="x", blend_strength=0.5),
    GenerationRequest(draft_decode=True),
])
def test_what_the_protocol_cannot_carry_is_refused_not_dropped(request_):
    with pytest.raises(RequestError, match="cannot be sent to an A1111-compatible server"):
        a1111.payload(request_)


def answer(images, infotexts, **info):
    return {"images": [a1111.encode_png(i) for i in images], "parameters": {},
            "info": json.dumps({"infotexts": infotexts, "sd_model_name": "fox", **info})}


def test_the_answer_is_read_back_from_its_infotexts_keeping_what_only_we_know():
    init, mask = Image.new("RGB", (8, 8), "red"), Image.new("L", (8, 8), 255)
    sent = GenerationRequest(prompt="a fox", seed=5, init_image=init, mask=mask, parent_id="ab" * 16,
                             model="/m/fox.safetensors", steps=20, batch_size=2)
    texts = [f"a fox\nNegative prompt: none\nSteps: 20, Sampler: Euler, Schedule type: Karras, CFG scale: 7, "
             f"Seed: {s}, Size: 8x8, Model hash: 0123456789, Model: fox, Denoising strength: 0.5, "
             "Mask blur: 3"
             for s in (5, 6)]
    blue = [Image.new("RGB", (8, 8), "blue")] * 2
    result = a1111.result_from_response(answer(blue, texts), sent, "box", 1.5)
    assert result.info == {"backend": "box"} and result.model_name == "fox" and result.seconds == 1.5
    assert [r.seed for r in result.requests] == [5, 6]
    first = result.requests[0]
    assert (first.sampler, first.cfg_scale, first.model_hash, first.strength, first.mask_blur,
            first.negative_prompt) == ("Euler", 7.0, "0123456789", 0.5, 3, "none")
    assert first.init_image is init and first.mask is mask and first.parent_id == "ab" * 16
    assert first.model == "/m/fox.safetensors" and first.batch_size == 1
    assert result.images[0].getpixel((0, 0)) == (0, 0, 255)


def test_a_grid_first_is_skipped_and_without_infotexts_the_servers_seeds_are_kept():
    images = [Image.new("RGB", (8, 8), c) for c in ("white", "red", "green")]
    result = a1111.result_from_response(answer(images, [], index_of_first_image=1, all_seeds=[90, 91]),
                                        GenerationRequest(seed=1, batch_size=2), "box", 0.0)
    assert [im.getpixel((0, 0)) for im in result.images] == [(255, 0, 0), (0, 128, 0)]
    assert [r.seed for r in result.requests] == [90, 91]


@pytest.mark.parametrize("bad", [[], {"images": "x"}, {"images": []}, {"images": ["bm90IGFuIGltYWdl"]},
                                 {"images": [], "info": "{not json"}])
def test_an_answer_that_is_not_a1111s_is_a_value_error(bad):
    with pytest.raises(ValueError):
        a1111.result_from_response(bad, GenerationRequest(), "box", 0.0)
