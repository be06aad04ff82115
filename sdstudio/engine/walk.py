"""Latent walks: N frames on the straight path between two (prompt, seed) endpoints, every other parameter
the start's. Frame k sits at t = k / (N - 1):

- noise: the initial noise is slerp(t, noise(start seed), noise(end seed)) (noise.slerp, Shoemake 1985 as
  A1111 applies it). That is exactly AUTOMATIC1111's variation seed with strength t, so a noise frame is
  written as an ordinary request with `subseed` = the end's seed and `subseed_strength` = t;
- prompt: the conditioning is lerp(t, cond(start prompt), cond(end prompt)) (conditioning.lerp_embeddings,
  ComfyUI's ConditioningAverage), written as `blend_prompt` = the end's prompt and `blend_strength` = t;
- both: the two together.

So every frame is a plain GenerationRequest whose parameters re-run to the same pixels on their own, and the
history needs no new kind of entry. The two end frames are written without blend or variation at all: frame 0
is the start's request, frame N - 1 the start's with the end's seed and/or prompt, so they equal plain runs
pixel for pixel (a blend at t = 1 would pad the end prompt to the start's chunk count; slerp at t = 1 may
differ from the end noise in the last bit).

A walk's prompts are encoded once: every frame asks the PromptEncoder for the same two prompts (plus the
negative and the empty prompt for padding), which its cache serves after the first frame.

Torch-free: the UI builds and describes walks without loading the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from sdstudio.engine.errors import RequestError
from sdstudio.engine.prompt_schedule import schedule, split_and
from sdstudio.engine.request import GenerationRequest, GenerationResult

WHATS = ("noise", "prompt", "both")
MIN_FRAMES, MAX_FRAMES = 2, 240


@dataclass(frozen=True)
class WalkRequest:
    """A walk from `start` to `end` in `frames` frames, moving the noise, the prompt or both (`what`).
    Of `end` only its seed and prompt are used."""

    start: GenerationRequest
    end: GenerationRequest
    frames: int = 8
    what: str = "both"

    @property
    def moves_noise(self) -> bool:
        return self.what in ("noise", "both")

    @property
    def moves_prompt(self) -> bool:
        return self.what in ("prompt", "both")


@dataclass(frozen=True)
class WalkResult:
    """The frames in order: image k was made by requests[k] at ts[k]."""

    images: list[Image.Image]
    requests: list[GenerationRequest]
    ts: list[float]
    model_name: str = ""
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


def check_walk(walk: WalkRequest) -> None:
    """RequestError for a walk that cannot be made or would repeat one image."""
    if walk.what not in WHATS:
        raise RequestError(f"a walk moves one of {', '.join(WHATS)}, not {walk.what!r}")
    frames = walk.frames
    if not isinstance(frames, int) or isinstance(frames, bool) or not MIN_FRAMES <= frames <= MAX_FRAMES:
        raise RequestError(f"frames {frames!r} is out of range: use {MIN_FRAMES}..{MAX_FRAMES}")
    for name, req in (("start", walk.start), ("end", walk.end)):
        # Their noise is not noise(seed) nor their conditioning cond(prompt): the path would start elsewhere.
        if float(req.subseed_strength) or float(req.blend_strength):
            raise RequestError(f"the walk's {name} image is itself a variation or blend; walk from a plain image")
    seeds_differ = walk.start.seed != walk.end.seed
    prompts_differ = walk.start.prompt != walk.end.prompt
    if walk.what == "noise" and not seeds_differ:
        raise RequestError("both ends have the same seed: a noise walk would repeat one image")
    if walk.what == "prompt" and not prompts_differ:
        raise RequestError("both ends have the same prompt: a prompt walk would repeat one image")
    if walk.what == "both" and not (seeds_differ or prompts_differ):
        raise RequestError("both ends have the same seed and prompt: the walk would repeat one image")
    if walk.moves_prompt and prompts_differ:
        blend_text(walk.end.prompt, walk.start.steps)


def blend_text(prompt: str, steps: int) -> str:
    """The text a blend prompt (a walk's end) encodes: one point to move towards, so RequestError when it
    changes over the steps (prompt editing, alternation) or holds AND."""
    entries = schedule(prompt, steps)
    if len(entries) != 1 or len(split_and(prompt)) != 1:
        raise RequestError("a blend prompt (a walk's end) cannot use prompt editing, alternation or AND")
    return entries[0][1]


def frame_times(frames: int) -> list[float]:
    """t of each frame: 0, 1/(N-1), ..., 1."""
    return [k / (frames - 1) for k in range(frames)]


def frame_request(walk: WalkRequest, t: float) -> GenerationRequest:
    """The ordinary request of the frame at t (see the module docstring)."""
    start, end = walk.start, walk.end
    request = start.replace(batch_size=1)
    move_noise = walk.moves_noise and start.seed != end.seed
    move_prompt = walk.moves_prompt and start.prompt != end.prompt
    if t == 0:
        return request
    if t == 1:
        changes = {}
        if move_noise:
            changes["seed"] = end.seed
        if move_prompt:
            changes["prompt"] = end.prompt
        return request.replace(**changes)
    if move_noise:
        request = request.replace(subseed=end.seed, subseed_strength=t)
    if move_prompt:
        request = request.replace(blend_prompt=end.prompt, blend_strength=t)
    return request


def frame_requests(walk: WalkRequest) -> list[GenerationRequest]:
    check_walk(walk)
    return [frame_request(walk, t) for t in frame_times(walk.frames)]


OnFrame = Callable[[int, GenerationResult], None]


def run_walk(engine, walk: WalkRequest, on_frame: OnFrame | None = None, on_step=None,
             should_cancel: Callable[[], bool] | None = None) -> WalkResult:
    """Render the walk's frames one by one with `engine` (api.Engine, or anything with its `generate`);
    `on_frame(k, result)` with frame k's one-image result after each, so a caller can save frames as they come."""
    requests = frame_requests(walk)
    images, written, seconds, result = [], [], 0.0, None
    for k, request in enumerate(requests):
        result: GenerationResult = engine.generate(request, on_step=on_step, should_cancel=should_cancel)
        images.append(result.images[0])
        written.append(result.requests[0])
        seconds += result.seconds
        if on_frame is not None:
            on_frame(k, result)
    return WalkResult(images, written, frame_times(walk.frames), result.model_name, seconds, dict(result.info))
