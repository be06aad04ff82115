"""ComfyUI prompt graphs: the common KSampler graphs read back, the rest refused with a reason, never an exception."""

import copy
import json

import pytest
from PIL import Image, PngImagePlugin

from sdstudio.history.comfyui import (
    MAX_DEPTH,
    MAX_NODES,
    comfyui_parameters,
    parameters_from_prompt,
    parameters_from_workflow,
)
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


@pytest.mark.parametrize(("sampler", "scheduler", "ours"), [
    ("uni_pc", "karras", ("UniPC", "Karras")),
    ("uni_pc_bh2", "normal", ("UniPC bh2", "Normal")),
    ("dpm_fast", "exponential", ("DPM fast", "Exponential")),
    ("dpm_adaptive", "karras", ("DPM adaptive", "Karras")),
])
def test_comfyuis_unipc_and_dpm_solver_samplers_read_as_ours(sampler, scheduler, ours):
    graph = copy.deepcopy(DEFAULT)
    graph["3"]["inputs"].update(sampler_name=sampler, scheduler=scheduler)
    params, problem = read(graph)
    assert problem == "" and (params["Sampler"], params["Schedule type"]) == ours


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


def test_an_empty_workflow_chunk_says_so():
    assert "workflow is not a graph of nodes" in comfyui_parameters({"workflow": "{}"}).problem
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


# ComfyUI's default graph as the editor saves it (the `workflow` chunk, or Save/Export): positional widget
# values, inputs with link ids, and the links table [id, origin, origin slot, target, target slot, type].
def _node(node_id, kind, inputs=(), outputs=(), widgets=None, mode=0):
    node = {"id": node_id, "type": kind, "pos": [0, 0], "size": [300, 100], "flags": {}, "order": node_id,
            "mode": mode, "properties": {"Node name for S&R": kind},
            "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": t, "type": t, "links": links, "slot_index": i} for i, (t, links) in enumerate(outputs)]}
    if widgets is not None:
        node["widgets_values"] = widgets
    return node


WORKFLOW = {
    "last_node_id": 9, "last_link_id": 9, "version": 0.4,
    "nodes": [
        _node(3, "KSampler", [("model", "MODEL", 1), ("positive", "CONDITIONING", 4),
                              ("negative", "CONDITIONING", 6), ("latent_image", "LATENT", 2)],
              [("LATENT", [7])], [1234567, "randomize", 25, 6.5, "dpmpp_2m", "karras", 1]),
        _node(4, "CheckpointLoaderSimple", [], [("MODEL", [1]), ("CLIP", [3, 5]), ("VAE", [8])],
              ["SD1.5\\v1-5-pruned-emaonly.safetensors"]),
        _node(5, "EmptyLatentImage", [], [("LATENT", [2])], [512, 768, 2]),
        _node(6, "CLIPTextEncode", [("clip", "CLIP", 3)], [("CONDITIONING", [4])],
              ["beautiful scenery, glass bottle: galaxy"]),
        _node(7, "CLIPTextEncode", [("clip", "CLIP", 5)], [("CONDITIONING", [6])], ["text, watermark"]),
        _node(8, "VAEDecode", [("samples", "LATENT", 7), ("vae", "VAE", 8)], [("IMAGE", [9])]),
        _node(9, "SaveImage", [("images", "IMAGE", 9)], [], ["ComfyUI"]),
    ],
    "links": [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"],
              [4, 6, 0, 3, 1, "CONDITIONING"], [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 3, 2, "CONDITIONING"],
              [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"], [9, 8, 0, 9, 0, "IMAGE"]],
    "groups": [], "config": {}, "extra": {}, "version_note": "as ComfyUI's frontend writes it",
}
EXPECTED = {
    "Prompt": "beautiful scenery, glass bottle: galaxy", "Negative prompt": "text, watermark", "Steps": "25",
    "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "6.5", "Seed": "1234567", "Size": "512x768",
    "Model": "v1-5-pruned-emaonly",
}


def read_workflow(workflow) -> tuple[dict, str]:
    found = parameters_from_workflow(json.dumps(workflow))
    return found.params, found.problem


def _by_id(workflow, node_id):
    return next(n for n in workflow["nodes"] if n["id"] == node_id)


def test_the_default_workflow_gives_every_value():
    params, problem = read_workflow(WORKFLOW)
    assert problem == ""
    assert {k: params[k] for k in EXPECTED} == EXPECTED
    assert params == read(DEFAULT)[0]  # the same as its prompt graph


def test_a_png_with_only_a_workflow_chunk_is_read_as_a_request(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", json.dumps(WORKFLOW))
    path = tmp_path / "exported.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path, pnginfo=info)
    found = read_file_parameters(path)
    assert found.problem == "" and found.model_name == "v1-5-pruned-emaonly"
    request = found.rerun_request()
    assert (request.prompt, request.seed, request.steps, request.cfg_scale) == (EXPECTED["Prompt"], 1234567, 25, 6.5)
    assert (request.sampler, request.scheduler, request.width, request.height) == ("DPM++ 2M", "karras", 512, 768)


def test_workflow_advanced_sampler_clip_skip_primitive_seed_reroute_and_bypass():
    """KSamplerAdvanced without a control value, a seed wired from a primitive, the latent through a Reroute,
    the prompt through a bypassed node, clip skip, and links in the object form of schema version 1."""
    workflow = copy.deepcopy(WORKFLOW)
    sampler = _by_id(workflow, 3)
    sampler["type"] = "KSamplerAdvanced"
    sampler["widgets_values"] = ["enable", 99, 30, 7, "euler_ancestral", "normal", 0, 10000, "disable"]
    sampler["inputs"].append({"name": "noise_seed", "type": "INT", "widget": {"name": "noise_seed"}, "link": 10})
    workflow["nodes"] += [
        _node(10, "PrimitiveNode", [], [("INT", [10])], [424242, "fixed"]),
        _node(11, "Reroute", [("", "*", 11)], [("LATENT", [2])]),
        _node(12, "ConditioningZeroOut", [("conditioning", "CONDITIONING", 12)], [("CONDITIONING", [4])], mode=4),
        _node(13, "CLIPSetLastLayer", [("clip", "CLIP", 13)], [("CLIP", [3, 5])], [-2]),
    ]
    links = [link for link in workflow["links"] if link[0] not in (2, 3, 4, 5)]
    links += [[10, 10, 0, 3, 4, "INT"], [2, 11, 0, 3, 3, "LATENT"], [11, 5, 0, 11, 0, "LATENT"],
              [12, 6, 0, 12, 0, "CONDITIONING"], [4, 12, 0, 3, 1, "CONDITIONING"], [13, 4, 1, 13, 0, "CLIP"],
              [3, 13, 0, 6, 0, "CLIP"], [5, 13, 0, 7, 0, "CLIP"]]
    workflow["links"] = [dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), link,
                                  strict=True)) for link in links]
    params, problem = read_workflow(workflow)
    assert problem == ""
    assert (params["Seed"], params["Steps"], params["CFG scale"], params["Sampler"]) == ("424242", "30", "7", "Euler a")
    assert (params["Clip skip"], params["Size"], params["Prompt"]) == ("2", "512x768", EXPECTED["Prompt"])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("lora", "its model comes from node '20' ('LoraLoader')"),
        ("two samplers", "it samples 2 times"),
        ("img2img", "it starts from node '5' ('VAEEncode')"),
        ("muted loader", "to a missing node '4'"),
        ("subgraph", "prompt goes through node '4' ('CheckpointLoaderSimple')"),  # what the node '6' passed on
    ],
)
def test_too_custom_workflows_get_the_same_message_as_prompt_graphs(change, expected):
    workflow = copy.deepcopy(WORKFLOW)
    if change == "lora":
        workflow["nodes"].append(_node(20, "LoraLoader", [("model", "MODEL", 20), ("clip", "CLIP", 21)],
                                       [("MODEL", [1]), ("CLIP", [])], ["x.safetensors", 1, 1]))
        workflow["links"] = [link for link in workflow["links"] if link[0] != 1]
        workflow["links"] += [[20, 4, 0, 20, 0, "MODEL"], [21, 4, 1, 20, 1, "CLIP"], [1, 20, 0, 3, 0, "MODEL"]]
    elif change == "two samplers":
        second = copy.deepcopy(_by_id(workflow, 3))
        second["id"] = 30
        workflow["nodes"].append(second)
    elif change == "img2img":
        _by_id(workflow, 5)["type"] = "VAEEncode"
    elif change == "muted loader":
        _by_id(workflow, 4)["mode"] = 2
    else:
        _by_id(workflow, 6)["type"] = "8b9c4f5e-0000-4000-8000-000000000000"
    params, problem = read_workflow(workflow)
    assert problem.startswith("its ComfyUI graph is too custom for SD Studio to re-create") and expected in problem


def _workflow_cycle():
    workflow = copy.deepcopy(WORKFLOW)
    workflow["nodes"] += [_node(40, "Reroute", [("", "*", 41)], [("LATENT", [40])]),
                          _node(41, "Reroute", [("", "*", 40)], [("LATENT", [41])])]
    workflow["links"] = [link for link in workflow["links"] if link[0] != 2]
    workflow["links"] += [[2, 40, 0, 3, 3, "LATENT"], [40, 41, 0, 40, 0, "LATENT"], [41, 40, 0, 41, 0, "LATENT"]]
    return workflow


def _workflow_set(path, value):
    workflow = copy.deepcopy(WORKFLOW)
    target = workflow
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return workflow


HOSTILE_WORKFLOWS = [
    "[" * 100_000 + "]" * 100_000,  # deep nesting
    '{"nodes": ' + "[" * 50_000 + "]" * 50_000 + "}",
    json.dumps({"nodes": [{"id": i, "type": "Note"} for i in range(MAX_NODES + 1)]}),  # a huge array
    json.dumps({"nodes": [], "links": list(range(10))}),
    json.dumps({"nodes": "all of them"}), json.dumps([WORKFLOW]), json.dumps(None), "NaN", "",
    json.dumps({"nodes": [1, "x", None, [], {"id": True, "type": "KSampler"}, {"id": [3], "type": "KSampler"}]}),
    json.dumps(_workflow_set(("links",), {"1": [1, 4, 0, 3, 0, "MODEL"]})),
    json.dumps(_workflow_set(("links", 0), [1, "4", "0", 3, 0, "MODEL"])),
    json.dumps(_workflow_set(("links", 0), [1.5, 4, 0, 3, 0, "MODEL"])),
    json.dumps(_workflow_set(("links", 3), [4, 3, 0, 3, 1, "CONDITIONING"])),  # the sampler feeds itself
    json.dumps(_workflow_set(("links", 1), [2, 999, 0, 3, 3, "LATENT"])),  # a missing node
    json.dumps(_workflow_set(("nodes", 0, "inputs"), "model")),
    json.dumps(_workflow_set(("nodes", 0, "inputs", 0), {"name": "model", "link": [1]})),
    json.dumps(_workflow_set(("nodes", 0, "inputs", 0), {"name": ["model"], "link": 1})),
    json.dumps(_workflow_set(("nodes", 0, "widgets_values"), 5)),
    json.dumps(_workflow_set(("nodes", 0, "widgets_values"), [None] * 100_000)),
    json.dumps(_workflow_set(("nodes", 0, "widgets_values"), {"seed": [1], "steps": "25", "cfg": {}})),
    json.dumps(_workflow_set(("nodes", 0, "widgets_values"), [10**400, "randomize", 25])),
    json.dumps(_workflow_set(("nodes", 0, "widgets_values"), [1, "x", float("inf"), 6.5, 3, None, 1])),
    json.dumps(_workflow_set(("nodes", 4, "widgets_values"), [{"text": "x"}])),
    json.dumps(_workflow_set(("nodes", 0, "type"), 7)),
    json.dumps(_workflow_set(("nodes", 0, "mode"), 4)),  # the bypassed sampler does not run
    json.dumps(_workflow_cycle()),
]


@pytest.mark.parametrize("text", HOSTILE_WORKFLOWS, ids=range(len(HOSTILE_WORKFLOWS)))
def test_hostile_workflows_give_a_problem_not_an_exception(text):
    found = comfyui_parameters({"workflow": text})
    assert found is not None and found.problem


def test_a_workflow_link_cycle_is_cut_off_as_a_missing_source():
    assert "latent_image" in read_workflow(_workflow_cycle())[1]
