"""ComfyUI's editor graph (the `workflow` text chunk, and the JSON its "Save"/"Export" writes) turned into the
API-format `prompt` graph that history/comfyui.py reads, for files that carry only the workflow.

The workflow format (ComfyUI frontend, schema version 0.4 and 1): {"nodes": [...], "links": [...]}. A node is
{"id", "type", "mode", "inputs": [{"name", "type", "link", "widget"?}], "outputs": [...], "widgets_values": [...]}.
Widget values are positional, so their names come from the node type (WIDGETS, for the nodes of the common
KSampler graphs); a seed widget may be followed by its "control after generate" value ("randomize"...). A
widget turned into an input keeps its value in widgets_values and gets an input named after it. A link is
[id, origin_id, origin_slot, target_id, target_slot, type] (version 1: the same as an object). Reroute
nodes and bypassed nodes (mode 4, which pass an input of the link's type through) are followed to the real
source; muted nodes (mode 2) do not run and are left out.

The JSON is someone else's file: every value is type-checked, the node and link counts are bounded, and
following reroutes stops after MAX_HOPS (a link cycle). Anything malformed becomes a WorkflowError with a
one-line reason; a graph that is well-formed but unusual is converted as it is and judged by comfyui.py.
"""

from __future__ import annotations

from typing import Any

MAX_NODES = 5000  # as comfyui.MAX_NODES: real graphs hold tens to a few hundred nodes
MAX_LINKS = 4 * MAX_NODES
MAX_HOPS = 32  # reroutes and bypassed nodes followed from one input
CONTROL = "control_after_generate"
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
MUTED, BYPASSED = 2, 4
PASS_THROUGH = frozenset({"Reroute"})

# The widget names of the nodes the common KSampler graphs use, in widgets_values order (ComfyUI's
# nodes.py INPUT_TYPES "required" then "optional", widget inputs only).
WIDGETS: dict[str, tuple[str, ...]] = {
    "KSampler": ("seed", CONTROL, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": ("add_noise", "noise_seed", CONTROL, "steps", "cfg", "sampler_name", "scheduler",
                         "start_at_step", "end_at_step", "return_with_leftover_noise"),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "CheckpointLoader": ("config_name", "ckpt_name"),
    "CLIPTextEncode": ("text",),
    "CLIPSetLastLayer": ("stop_at_clip_layer",),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "PrimitiveNode": ("value", CONTROL),  # the editor's primitive: one value, wired to widgets
}


class WorkflowError(ValueError):
    """The workflow JSON is not a graph this reader can take apart; the message says why in one line."""


def prompt_from_workflow(workflow: Any) -> dict[str, dict[str, Any]]:
    """The API-format graph {node_id: {"class_type", "inputs"}} of a parsed workflow; WorkflowError when the
    JSON does not have the workflow's shape."""
    if not isinstance(workflow, dict):
        raise WorkflowError("is not a graph of nodes")
    nodes, links = workflow.get("nodes"), workflow.get("links", [])
    if not isinstance(nodes, list) or not nodes:
        raise WorkflowError("is not a graph of nodes")
    if not isinstance(links, list):
        raise WorkflowError("has no usable links table")
    if len(nodes) > MAX_NODES or len(links) > MAX_LINKS:
        raise WorkflowError(f"has {len(nodes):,} nodes and {len(links):,} links, more than the "
                            f"{MAX_NODES:,} and {MAX_LINKS:,} read")
    by_id = {}
    for node in nodes:
        node_id = _id(node.get("id")) if isinstance(node, dict) else None
        if node_id is not None and isinstance(node.get("type"), str) and node.get("mode", 0) != MUTED:
            by_id[node_id] = node
    table = _links(links)
    return {node_id: {"class_type": node["type"], "inputs": _inputs(node, by_id, table)}
            for node_id, node in by_id.items()
            if node.get("mode", 0) != BYPASSED and node["type"] not in PASS_THROUGH}


def _id(value: Any) -> str | None:
    """A node id as the API format writes it (a string), or None for anything that is no id."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    text = str(value)
    return text if 0 < len(text) <= 40 else None


def _links(links: list) -> dict[int, tuple[str, int, str]]:
    """link id -> (origin node id, origin slot, type), from both the list and the object form."""
    table = {}
    for link in links:
        if isinstance(link, list) and len(link) >= 6:
            link_id, origin, slot, kind = link[0], link[1], link[2], link[5]
        elif isinstance(link, dict):
            link_id, origin, slot, kind = (link.get(k) for k in ("id", "origin_id", "origin_slot", "type"))
        else:
            continue
        origin = _id(origin)
        if _is_int(link_id) and origin is not None and _is_int(slot):
            table[link_id] = (origin, slot, kind if isinstance(kind, str) else "")
    return table


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _inputs(node: dict, by_id: dict[str, dict], table: dict[int, tuple[str, int, str]]) -> dict[str, Any]:
    """The node's inputs in API form: its widget values by name, then its links as [node_id, slot]."""
    inputs = _widgets(node)
    for slot in node.get("inputs") or []:
        if not isinstance(slot, dict):
            continue
        widget = slot.get("widget")
        name = widget.get("name") if isinstance(widget, dict) else slot.get("name")
        source = _source(slot.get("link"), by_id, table)
        if isinstance(name, str) and source is not None:
            inputs[name] = source
    return inputs


def _widgets(node: dict) -> dict[str, Any]:
    values = node.get("widgets_values")
    if isinstance(values, dict):  # some nodes save their widgets by name
        return {k: v for k, v in values.items() if isinstance(k, str)}
    if not isinstance(values, list):
        return {}
    named, position = {}, 0
    for name in WIDGETS.get(node["type"], ()):
        if position >= len(values):
            break
        value = values[position]
        if name == CONTROL and value not in CONTROL_VALUES:
            continue  # this seed widget has no control value saved
        named[name] = value
        position += 1
    named.pop(CONTROL, None)
    return named


def _source(link: Any, by_id: dict[str, dict], table: dict[int, tuple[str, int, str]]) -> list | None:
    """[origin_id, slot] of the node that really produces a link's value, through reroutes and bypassed nodes;
    None for no link, a link missing from the table, or a loop. An origin left out (muted, or not a node)
    stays named, so that the reader can say the link goes to a missing node."""
    for _ in range(MAX_HOPS):
        if not _is_int(link) or link not in table:
            return None
        origin, slot, kind = table[link]
        node = by_id.get(origin)
        if node is None or (node["type"] not in PASS_THROUGH and node.get("mode", 0) != BYPASSED):
            return [origin, slot]
        link = _pass_through_link(node, kind)
    return None


def _pass_through_link(node: dict, kind: str) -> Any:
    """The link a reroute or bypassed node passes on: its input of the link's type (a reroute's only one)."""
    slots = [s for s in node.get("inputs") or [] if isinstance(s, dict)]
    if node["type"] in PASS_THROUGH:
        return slots[0].get("link") if slots else None
    for slot in slots:
        if slot.get("type") == kind:
            return slot.get("link")
    return None
