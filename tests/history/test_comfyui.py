"""ComfyUI prompt graphs: the common KSampler graphs read back, the rest refused with a reason, never an exception."""

import copy
import json

import pytest
from PIL import Image, PngImagePlugin

from sdstudio.history.comfyui import MAX_DEPTH, MAX_NODES, comfyui_parameters, parameters_from_prompt
from sdstudio.history.file_parameters import read_file_parameters

# ComfyUI's default workflow in API format, as its SaveImage writes it (seed lowered into SD Studio's range).
DEFAULT = {
    "3": {"class_type": "KSampler", "inputs": {
        "seed": 1234567, "steps": 25, "cfg": 6.5, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "SD1.5\\v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 768, "batch_size": 2}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "beautiful scenery, glass bottle: galaxy", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


def advanced() -> dict:
    graph = copy.deepcopy(DEFAULT)
    inputs = graph["3"]["inputs"]
    del inputs["seed"], inputs["denoise"]
    inputs.update(noise_seed=42, add_noise="enable", start_at_step=0, end_at_step=10000,
                  return_with_leftover_noise="disable", sampler_name="euler_ancestral", scheduler="normal")
    graph["3"]["class_type"] = "KSamplerAdvanced"
    graph["10"] = {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -2, "clip": ["4", 1]}}
    graph["6"]["inputs"]["clip"] = graph["7"]["inputs"]["clip"] = ["10", 0]
    return graph


def read(graph) -> tuple[dict, str]:
    found = parameters_from_prompt(json.dumps(graph))
    return found.params, found.problem


def test_default_workflow_gives_every_value():
    params, problem = read(DEFAULT)
    assert problem == ""
    assert params["Prompt"] == "beautiful scenery, glass bottle: galaxy"
    assert params["Negative prompt"] == "text, watermark"
    assert (params["Steps"], params["CFG scale"], params["Seed"]) == ("25", "6.5", "1234567")
    assert (params["Sampler"], params["Schedule type"]) == ("DPM++ 2M", "Karras")
    assert (params["Size"], params["Batch size"]) == ("512x768", "2")
    assert params["Model"] == "v1-5-pruned-emaonly"  # folder and extension dropped, as A1111 names models


def test_ksampler_advanced_and_clip_skip():
    params, problem = read(advanced())
    assert problem == ""
    assert (params["Seed"], params["Sampler"], params["Schedule type"], params["Clip skip"]) == ("42", "Euler a", "Normal", "2")


def test_advanced_running_part_of_the_steps_is_too_custom():
    graph = advanced()
    graph["3"]["inputs"]["end_at_step"] = 12
    params, problem = read(graph)
    assert "too custom" in problem and "steps 0 to 12 of 25" in problem


@pytest.mark.parametrize("change, expected", [
    (lambda g: g.update({"11": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1]}}}) or
     g["3"]["inputs"].update(model=["11", 0]), "LoraLoader"),
    (lambda g: g.update({"12": {"class_type": "ConditioningCombine", "inputs": {
        "conditioning_1": ["6", 0], "conditioning_2": ["7", 0]}}}) or g["3"]["inputs"].update(positive=["12", 0]),
     "ConditioningCombine"),
    (lambda g: g.update({"13": {"class_type": "VAEEncode", "inputs": {"pixels": ["9", 0], "vae": ["4", 2]}}}) or
     g["3"]["inputs"].update(latent_image=["13", 0]), "VAEEncode"),
    (lambda g: g.update({"14": copy.deepcopy(g["3"])}), "samples 2 times"),
    (lambda g: g["3"]["inputs"].update(denoise=0.5), "denoises 0.5"),
])
def test_too_custom_graphs_name_what_they_do(change, expected):
    graph = copy.deepcopy(DEFAULT)
    change(graph)
    params, problem = read(graph)
    assert problem.startswith("its ComfyUI graph is too custom") and expected in problem


def test_trivial_conditioning_chain_is_followed():
    graph = copy.deepcopy(DEFAULT)
    graph["12"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["6", 0]}}
    graph["3"]["inputs"]["positive"] = ["12", 0]
    assert read(graph) == (read(DEFAULT)[0], "")


def test_unknown_sampler_and_big_seed_are_problems_with_the_values_kept():
    graph = copy.deepcopy(DEFAULT)
    graph["3"]["inputs"].update(sampler_name="wibble_solver", seed=156680208700286)
    params, problem = read(graph)
    assert "wibble_solver" in problem and params["Sampler"] == "wibble_solver" and params["Seed"] == "156680208700286"
    graph["3"]["inputs"].update(sampler_name="euler", scheduler="karras")
    assert "156680208700286" in read(graph)[1]


def test_a_sampler_or_schedule_we_lack_is_kept_as_written_for_the_nearest_offer(tmp_path):
    """Names other tools have (deis, linear_quadratic) are no graph problem: the file reads as a request
    whose problem names our nearest, and `with_nearest_sampler` substitutes it."""
    graph = copy.deepcopy(DEFAULT)
    graph["3"]["inputs"].update(sampler_name="deis", scheduler="linear_quadratic")
    params, problem = read(graph)
    assert problem == "" and (params["Sampler"], params["Schedule type"]) == ("deis", "linear_quadratic")
    found = read_file_parameters(_png(tmp_path, graph))
    assert "'deis' is not in SD Studio; the nearest is 'DPM++ 2M'" in found.problem
    substituted, change = found.with_nearest_sampler()
    assert (substituted.request.sampler, substituted.request.scheduler) == ("DPM++ 2M", "normal")
    assert change == "sampler 'deis' → DPM++ 2M, schedule 'linear_quadratic' → Normal"
    assert substituted.request.replace(sampler="deis", scheduler="linear_quadratic") == found.request


def _cycle():
    graph = copy.deepcopy(DEFAULT)
    graph["12"] = {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["13", 0]}}
    graph["13"] = {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["12", 0]}}
    graph["3"]["inputs"]["positive"] = ["12", 0]
    return graph


def _set(path, value):
    def change(graph):
        *keys, last = path
        target = graph
        for key in keys:
            target = target[key]
        target[last] = value
        return graph
    return change


@pytest.mark.parametrize("text", [
    "", "not json", "[1, 2]", "{}", "null", '{"1": 5}', "[" * 100_000, json.dumps(_cycle()),
    json.dumps({str(i): {"class_type": "KSampler", "inputs": {}} for i in range(MAX_NODES + 1)}),
    *(json.dumps(_set(path, value)(copy.deepcopy(DEFAULT))) for path, value in [
        (("3", "inputs", "seed"), "7"), (("3", "inputs", "seed"), True), (("3", "inputs", "seed"), 10**400),
        (("3", "inputs", "cfg"), None), (("3", "inputs", "steps"), 2.5), (("3", "inputs", "positive"), ["99", 0]),
        (("3", "inputs", "positive"), [None, 0]), (("3", "inputs", "model"), ["3", 0]), (("3", "inputs"), []),
        (("6", "inputs", "text"), ["3", 0]), (("6",), "node"), (("5", "inputs", "width"), {"a": 1}),
        (("4", "inputs", "ckpt_name"), 12), (("3", "class_type"), 5), (("3", "inputs", "seed"), ["3", 0]),
    ]),
])
def test_hostile_graphs_give_a_problem_not_an_exception(text):
    found = parameters_from_prompt(text)
    assert found.problem


def test_deep_links_are_bounded():
    graph = copy.deepcopy(DEFAULT)
    for i in range(100, 100 + MAX_DEPTH * 3):
        graph[str(i)] = {"class_type": "Reroute", "inputs": {"input": [str(i + 1), 0]}}
    graph[str(100 + MAX_DEPTH * 3)] = graph["6"]
    graph["3"]["inputs"]["positive"] = ["100", 0]
    assert "more than" in read(graph)[1]


def test_only_a_workflow_chunk_says_so():
    assert "workflow" in comfyui_parameters({"workflow": "{}"}).problem
    assert comfyui_parameters({"other": "x"}) is None


def _png(tmp_path, graph):
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(graph))
    info.add_text("workflow", json.dumps({"nodes": []}))
    path = tmp_path / "ComfyUI_00001_.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path, pnginfo=info)
    return path


def test_a_comfyui_png_is_read_as_a_request(tmp_path):
    found = read_file_parameters(_png(tmp_path, advanced()))
    assert found.problem == "" and found.has_parameters and found.mode == "txt2img"
    request = found.rerun_request()
    assert (request.prompt, request.negative_prompt) == ("beautiful scenery, glass bottle: galaxy", "text, watermark")
    assert (request.seed, request.steps, request.cfg_scale, request.clip_skip) == (42, 25, 6.5, 2)
    assert (request.sampler, request.scheduler, request.width, request.height) == ("Euler a", "normal", 512, 768)
    assert found.model_name == "v1-5-pruned-emaonly"
    assert "Steps: 25" in found.text and "Negative prompt: text, watermark" in found.text


def test_a_too_custom_comfyui_png_lists_but_does_not_rerun(tmp_path):
    graph = copy.deepcopy(DEFAULT)
    graph["3"]["inputs"]["denoise"] = 0.4
    found = read_file_parameters(_png(tmp_path, graph), pixels=False)
    assert found.request is None and "too custom" in found.problem
    assert found.listing_request().prompt == "beautiful scenery, glass bottle: galaxy"
