"""ComfyUI PNGs: the generation parameters of the common KSampler graphs, read from the `prompt` text chunk
(or, when a file has only the editor's `workflow`, from that graph converted by comfyui_workflow.py).

ComfyUI's API format (what `SaveImage` writes as tEXt "prompt"): a JSON object {node_id: {"class_type": ...,
"inputs": {...}}} in which an input is either a value or a link [node_id, output_index]. We start at the one
KSampler (or KSamplerAdvanced) and follow its links: positive/negative to CLIPTextEncode "text", latent_image
to EmptyLatentImage, model to CheckpointLoaderSimple, the text encoder's clip through CLIPSetLastLayer (clip
skip). Anything else on those paths (LoRA, ControlNet, two sampling passes, an upscale) is a graph SD Studio
cannot re-create, and the result says so, naming the node; the values found are still returned for listing.

The result is in AUTOMATIC1111's parameter names (history/parameters.py), so the rest of history treats a
ComfyUI file like an A1111 one. The JSON is someone else's file: every value is type-checked, links may point
anywhere (missing nodes, cycles), and the work is bounded by MAX_NODES and MAX_DEPTH.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdstudio.engine.names import SCHEDULER_LABELS, NotOffered, canonical_sampler, canonical_scheduler
from sdstudio.engine.request import MAX_SEED
from sdstudio.history.comfyui_workflow import WorkflowError, prompt_from_workflow
from sdstudio.history.parameters import quote
from sdstudio.untrusted import quoted

PROMPT_KEY = "prompt"
WORKFLOW_KEY = "workflow"
MAX_NODES = 5000  # real graphs hold tens to a few hundred nodes
MAX_DEPTH = 16  # links followed from the sampler to a value; the common graphs need 3
SAMPLER_NODES = ("KSampler", "KSamplerAdvanced")
CHECKPOINT_NODES = ("CheckpointLoaderSimple", "CheckpointLoader")
TEXT_NODES = ("CLIPTextEncode",)


class TooCustom(ValueError):
    """The graph does something the common KSampler graphs do not; the message names the node."""


@dataclass(frozen=True)
class ComfyParameters:
    """What a ComfyUI prompt graph says, in A1111's parameter names; `problem` is "" when SD Studio can re-run it."""

    params: dict[str, str] = field(default_factory=dict)
    problem: str = ""

    @property
    def text(self) -> str:
        """The parameters as A1111 would write them, for display and `sdstudio params`."""
        fields = ", ".join(f"{k}: {quote(v)}" for k, v in self.params.items() if k not in ("Prompt", "Negative prompt"))
        negative = self.params.get("Negative prompt", "")
        return f"{self.params.get('Prompt', '')}{f'{chr(10)}Negative prompt: {negative}' if negative else ''}\n{fields}".strip()


def comfyui_parameters(texts: dict[str, str]) -> ComfyParameters | None:
    """The parameters of a PNG's text chunks when they hold a ComfyUI graph; None when they hold none. The
    `prompt` graph is what ran; a file with only the editor's `workflow` is read through comfyui_workflow."""
    if PROMPT_KEY in texts:
        return parameters_from_prompt(texts[PROMPT_KEY])
    if WORKFLOW_KEY in texts:
        return parameters_from_workflow(texts[WORKFLOW_KEY])
    return None


def parameters_from_workflow(text: str) -> ComfyParameters:
    """Read a ComfyUI `workflow` chunk or exported workflow JSON; never raises on a hostile text."""
    try:
        graph = prompt_from_workflow(json.loads(text))
    except (RecursionError, ValueError) as e:  # JSONDecodeError and WorkflowError are ValueErrors
        reason = str(e) if isinstance(e, WorkflowError) else "is not valid JSON"
        return ComfyParameters(problem=f"its ComfyUI workflow {reason}")
    return _parameters(graph)


def parameters_from_prompt(text: str) -> ComfyParameters:
    """Read a ComfyUI `prompt` chunk (see module docstring); never raises on a hostile text."""
    try:
        graph = json.loads(text)
    except (RecursionError, ValueError):
        return ComfyParameters(problem="its ComfyUI prompt is not valid JSON")
    if not isinstance(graph, dict) or not graph:
        return ComfyParameters(problem="its ComfyUI prompt is not a graph of nodes")
    return _parameters(graph)


def _parameters(graph: dict) -> ComfyParameters:
    if len(graph) > MAX_NODES:
        return ComfyParameters(problem=f"its ComfyUI graph has {len(graph):,} nodes, more than the {MAX_NODES:,} read")
    reader = _Reader({str(k): v for k, v in graph.items()})
    try:
        reader.read()
    except TooCustom as e:
        return ComfyParameters(reader.params, f"its ComfyUI graph is too custom for SD Studio to re-create: {e}")
    return ComfyParameters(reader.params, reader.problem)


def _class(node: Any) -> str:
    kind = node.get("class_type") if isinstance(node, dict) else None
    return kind if isinstance(kind, str) else "?"


def _shown(node_id: str, node: Any) -> str:
    return f"node {quoted(node_id, 20)} ({quoted(_class(node), 60)})"


class _Reader:
    def __init__(self, graph: dict[str, Any]) -> None:
        self.graph = graph
        self.params: dict[str, str] = {}
        self.problem = ""

    def read(self) -> None:
        samplers = [k for k, v in self.graph.items() if _class(v) in SAMPLER_NODES]
        if not samplers:
            raise TooCustom("it has no KSampler node")
        if len(samplers) > 1:
            raise TooCustom(f"it samples {len(samplers)} times (KSampler nodes {', '.join(quoted(s, 20) for s in samplers[:5])})")
        node_id = samplers[0]
        node = self.graph[node_id]
        inputs = self._inputs(node_id, node)
        advanced = _class(node) == "KSamplerAdvanced"
        steps = self._int(node_id, inputs, "steps")
        self.params["Prompt"] = self._text(node_id, inputs, "positive")
        self.params["Negative prompt"] = self._text(node_id, inputs, "negative")
        self.params["Steps"] = str(steps)
        self._sampler(node_id, inputs)
        cfg = self._number(node_id, inputs, "cfg")
        self.params["CFG scale"] = str(int(cfg)) if cfg.is_integer() else repr(cfg)
        seed = self._int(node_id, inputs, "noise_seed" if advanced else "seed")
        self.params["Seed"] = str(seed)
        self._latent(node_id, inputs)
        self._model(node_id, inputs)
        if advanced:
            start, end = self._int(node_id, inputs, "start_at_step"), self._int(node_id, inputs, "end_at_step")
            if start > 0 or end < steps:
                raise TooCustom(f"{_shown(node_id, node)} runs only steps {start} to {end} of {steps}")
            if inputs.get("add_noise", "enable") != "enable":
                raise TooCustom(f"{_shown(node_id, node)} adds no noise")
        else:
            denoise = self._number(node_id, inputs, "denoise") if "denoise" in inputs else 1.0
            if denoise != 1.0:
                raise TooCustom(f"{_shown(node_id, node)} denoises {denoise:g} of an empty latent")
        if not 0 <= seed <= MAX_SEED:
            self._note(f"its seed {seed} is outside SD Studio's 0..{MAX_SEED}")

    def _note(self, problem: str) -> None:
        self.problem = self.problem or problem

    # Values -----------------------------------------------------------------------------------------

    def _inputs(self, node_id: str, node: Any) -> dict[str, Any]:
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            raise TooCustom(f"{_shown(node_id, node)} has no inputs")
        return inputs

    def _value(self, node_id: str, inputs: dict[str, Any], name: str, kinds: tuple[type, ...], depth: int = 0) -> Any:
        """An input's value, following a link to a primitive node ("value"/"text"/"string" input) if need be."""
        value = inputs.get(name)
        if _is_link(value):
            target_id, target = self._follow(node_id, value, name, depth)
            target_inputs = self._inputs(target_id, target)
            for key in (name, "value", "text", "string", "seed", "int", "float"):
                if key in target_inputs:
                    return self._value(target_id, target_inputs, key, kinds, depth + 1)
            raise TooCustom(f"{name} comes from {_shown(target_id, target)}")
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise TooCustom(f"{_shown(node_id, self.graph.get(node_id))} has no usable {quoted(name, 40)}")
        return value

    def _int(self, node_id: str, inputs: dict[str, Any], name: str) -> int:
        value = self._value(node_id, inputs, name, (int,))
        if not -(2**64) < value < 2**64:
            raise TooCustom(f"its {name} {str(value)[:30]} is out of range")
        return value

    def _number(self, node_id: str, inputs: dict[str, Any], name: str) -> float:
        value = float(self._value(node_id, inputs, name, (int, float)))
        if not math.isfinite(value):
            raise TooCustom(f"its {name} is not a finite number")
        return value

    def _follow(self, node_id: str, link: list, name: str, depth: int) -> tuple[str, Any]:
        if depth >= MAX_DEPTH:
            raise TooCustom(f"its {name} passes through more than {MAX_DEPTH} nodes (or a loop)")
        target_id = str(link[0])
        if target_id not in self.graph:
            raise TooCustom(f"{_shown(node_id, self.graph.get(node_id))} links its {quoted(name, 40)} to a missing node "
                            f"{quoted(target_id, 20)}")
        return target_id, self.graph[target_id]

    # The paths from the sampler -----------------------------------------------------------------------

    def _text(self, node_id: str, inputs: dict[str, Any], name: str) -> str:
        """The prompt text behind a conditioning input, through nodes that pass one conditioning along."""
        for depth in range(MAX_DEPTH):
            link = inputs.get(name)
            if not _is_link(link):
                raise TooCustom(f"{_shown(node_id, self.graph.get(node_id))} has no {quoted(name, 40)} link")
            node_id, node = self._follow(node_id, link, name, depth)
            inputs = self._inputs(node_id, node)
            if _class(node) in TEXT_NODES:
                self._clip(node_id, inputs)
                return self._value(node_id, inputs, "text", (str,))
            sources = {str(v[0]) for v in inputs.values() if _is_link(v)}
            if len(sources) != 1:  # ConditioningCombine of two prompts, ControlNet, area conditioning...
                raise TooCustom(f"its {name} prompt goes through {_shown(node_id, node)}")
            name = next(k for k, v in inputs.items() if _is_link(v))
        raise TooCustom(f"its {name} passes through more than {MAX_DEPTH} nodes (or a loop)")

    def _clip(self, node_id: str, inputs: dict[str, Any]) -> None:
        """Clip skip from a CLIPSetLastLayer between the text encoder and the checkpoint."""
        link = inputs.get("clip")
        if not _is_link(link):
            raise TooCustom(f"{_shown(node_id, self.graph.get(node_id))} has no clip link")
        clip_id, clip = self._follow(node_id, link, "clip", 0)
        if _class(clip) == "CLIPSetLastLayer":
            layer = self._int(clip_id, self._inputs(clip_id, clip), "stop_at_clip_layer")
            if not -24 <= layer <= -1:
                raise TooCustom(f"{_shown(clip_id, clip)} stops at layer {layer}")
            skip = str(-layer)
            if self.params.setdefault("Clip skip", skip) != skip:
                raise TooCustom("its two prompts use different clip skips")
            link = self._inputs(clip_id, clip).get("clip")
            if not _is_link(link):
                raise TooCustom(f"{_shown(clip_id, clip)} has no clip link")
            clip_id, clip = self._follow(clip_id, link, "clip", 1)
        if _class(clip) not in CHECKPOINT_NODES:  # a LoRA loader, a separate CLIP loader...
            raise TooCustom(f"its text encoder comes from {_shown(clip_id, clip)}")

    def _sampler(self, node_id: str, inputs: dict[str, Any]) -> None:
        sampler = self._value(node_id, inputs, "sampler_name", (str,))
        scheduler = self._value(node_id, inputs, "scheduler", (str,))
        self.params["Sampler"], self.params["Schedule type"] = sampler, scheduler
        # A name another tool has and we lack stays as written: reading the parameters names our nearest
        # (parameters.request_and_problem), and the user may re-run with it.
        try:
            ours, schedule = canonical_sampler(sampler)
            self.params["Sampler"] = ours
        except NotOffered:
            schedule = None
        except ValueError:
            self._note(f"its ComfyUI sampler {quoted(sampler, 60)} is not one SD Studio has")
            return
        try:
            schedule = canonical_scheduler(scheduler) if schedule is None else schedule
            self.params["Schedule type"] = SCHEDULER_LABELS.get(schedule, schedule)
        except NotOffered:
            pass
        except ValueError:
            self._note(f"its ComfyUI scheduler {quoted(scheduler, 60)} is not one SD Studio has")

    def _latent(self, node_id: str, inputs: dict[str, Any]) -> None:
        link = inputs.get("latent_image")
        if not _is_link(link):
            raise TooCustom(f"{_shown(node_id, self.graph.get(node_id))} has no latent_image link")
        latent_id, latent = self._follow(node_id, link, "latent_image", 0)
        if _class(latent) != "EmptyLatentImage":  # VAEEncode (img2img), an upscaled latent (hires fix)...
            raise TooCustom(f"it starts from {_shown(latent_id, latent)}, not an EmptyLatentImage")
        latent_inputs = self._inputs(latent_id, latent)
        width, height = (self._int(latent_id, latent_inputs, side) for side in ("width", "height"))
        self.params["Size"] = f"{width}x{height}"
        if "batch_size" in latent_inputs:
            self.params["Batch size"] = str(self._int(latent_id, latent_inputs, "batch_size"))

    def _model(self, node_id: str, inputs: dict[str, Any]) -> None:
        link = inputs.get("model")
        if not _is_link(link):
            raise TooCustom(f"{_shown(node_id, self.graph.get(node_id))} has no model link")
        model_id, model = self._follow(node_id, link, "model", 0)
        if _class(model) not in CHECKPOINT_NODES:  # LoRA, model patches, a UNet-only loader...
            raise TooCustom(f"its model comes from {_shown(model_id, model)}")
        name = self._value(model_id, self._inputs(model_id, model), "ckpt_name", (str,))
        self.params["Model"] = Path(name.replace("\\", "/").rsplit("/", 1)[-1]).stem  # A1111 names models by stem


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int))
