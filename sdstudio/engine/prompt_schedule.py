"""AUTOMATIC1111's prompt editing, alternation and composable `AND` (`modules/prompt_parser.py`:
get_learned_conditioning_prompt_schedules, get_multicond_prompt_list), read with our own parser.

    [from:to:when]   `from` until step `when`, then `to`      [to:when]  nothing, then `to`
    [from::when]     `from`, then nothing                     [a|b|c]    a, b, c, a, ... one per step
    a :1.0 AND b :0.8   sub-prompts, each guided with its weight (composable diffusion, Liu et al. 2022,
                        "Compositional Visual Generation with Composable Diffusion Models", arXiv:2206.01714)

`when` as A1111 (>= 1.6, its default "new" scheduling): a number written with a dot is a fraction of the steps
(`0.25` -> int(0.25 * steps)), one without is a step number; either is capped at `steps`. Constructs nest.
A prompt becomes a schedule: (until_step, text) pairs, as A1111's; the text of a step keeps emphasis `( )`,
`[ ]`, `(x:1.2)`, escapes and BREAK verbatim for prompt_grammar. The sampler uses entry i for its model call
`n` (counted from 0) when n <= until_step of entry i and not of any earlier one (A1111's CFGDenoiser step
counter and reconstruct_cond_batch): so `[a:b:3]` gives `a` to calls 0..3.

The grammar is A1111's lark grammar in meaning: a bracket that does not form a construct is literal text at
the top level (`a [unbalanced`); a `|` outside `[a|b]` or a trailing lone backslash makes A1111's parser
fail, and then the whole prompt is one plain text, as there. Torch-free: the UI highlights with `spans`.
Hostile input fails in one line (RequestError): brackets nested deeper than MAX_DEPTH, a `when` that is not
a finite number.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sdstudio.engine.errors import RequestError

MAX_DEPTH = 100  # nested brackets; A1111's Earley parser would take minutes long before Python's stack ends
# lark's common.SIGNED_NUMBER, with the whitespace A1111's `scheduled` rule allows around it
_WHEN = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*")
_AND = re.compile(r"\bAND\b")
# A1111's re_weight: the sub-prompt, then an optional `:number` at its end (`.` stops at a newline, as there)
_SUB_WEIGHT = re.compile(r"^(\s*.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


@dataclass(frozen=True)
class Scheduled:
    """`[before:after:when]`; `when` is the number as written, `at` the offset of the opening bracket."""

    before: tuple
    after: tuple
    when: str
    at: int


@dataclass(frozen=True)
class Alternate:
    options: tuple  # of node tuples


@dataclass(frozen=True)
class Span:
    """A highlighted piece of a prompt: [start, end) and its kind (see KINDS); `message` for problems."""

    start: int
    end: int
    kind: str
    message: str = ""


# "problem": the engine refuses the prompt; "warning": A1111 reads it, likely not as meant
KINDS = ("schedule", "alternate", "when", "and", "weight", "emphasis", "escape", "lora", "problem", "warning")


class _Fail(Exception):
    """This bracket forms no construct (literal at the top level, the enclosing bracket fails inside)."""


class _Unparsable(Exception):
    """A1111's parser rejects the whole prompt: it is then one plain text."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.spans: list[Span] = []

    def top(self) -> tuple:
        nodes: list = []
        i, n = 0, len(self.text)
        while i < n:
            c = self.text[i]
            if c in "([":
                mark = len(self.spans)
                try:
                    got, i = self.bracket(i, 1)
                    nodes += got
                    continue
                except _Fail:
                    del self.spans[mark:]
                    self.spans.append(Span(i, i + 1, "warning", f"this '{c}' is not closed, or what it holds is "
                                           "no [from:to:when], [a|b] or emphasis: A1111 reads it as text"))
            if c == "|":
                raise _Unparsable(i)
            if c in "])":
                self.spans.append(Span(i, i + 1, "warning", f"this '{c}' closes nothing: A1111 reads it as text"))
            if c in "[]():":
                nodes.append(c)
                i += 1
                continue
            text, i = self.plain(i)
            nodes.append(text)
        return tuple(nodes)

    def plain(self, i: int, literal_bar: bool = False) -> tuple[str, int]:
        """Text up to the next bracket, colon or bar; escapes (backslash + any character) stay as written."""
        start, n = i, len(self.text)
        while i < n:
            c = self.text[i]
            if c == "\\":
                if i + 1 == n:
                    raise _Unparsable(i)
                self.spans.append(Span(i, i + 2, "escape"))
                i += 2
            elif c in "[]():" or (c == "|" and not literal_bar):
                break
            else:
                i += 1
        return self.text[start:i], i

    def seq(self, i: int, depth: int, stops: str) -> tuple[list, int]:
        """Nodes up to a character of `stops` at this level (Fail at the end of the text)."""
        nodes: list = []
        while True:
            if i == len(self.text):
                raise _Fail
            c = self.text[i]
            if c in stops:
                return nodes, i
            if c in "([":
                got, i = self.bracket(i, depth + 1)
                nodes += got
            elif c in "]):|":
                raise _Fail
            else:
                text, i = self.plain(i)
                nodes.append(text)

    def bracket(self, i: int, depth: int) -> tuple[list, int]:
        if depth > MAX_DEPTH:
            raise RequestError(f"the prompt nests brackets more than {MAX_DEPTH} deep (at character {i + 1})")
        return self.round(i, depth) if self.text[i] == "(" else self.square(i, depth)

    def round(self, i: int, depth: int) -> tuple[list, int]:
        """`(prompt)` or `(prompt:prompt)`: emphasis, kept verbatim."""
        first, j = self.seq(i + 1, depth, ":)")
        out = ["(", *first]
        if self.text[j] == ":":
            second, k = self.seq(j + 1, depth, ")")
            self.spans.append(Span(j, k, "weight"))
            out += [":", *second]
            j = k
        self.spans += [Span(i, i + 1, "emphasis"), Span(j, j + 1, "emphasis")]
        return [*out, ")"], j + 1

    def square(self, i: int, depth: int) -> tuple[list, int]:
        """`[prompt]` (emphasis), `[a:b:when]`, `[b:when]` or `[a|b|...]`."""
        parts, seps, j = [], [], i + 1
        while True:
            nodes, j = self.seq(j, depth, ":|]")
            parts.append(nodes)
            if self.text[j] == "]":
                break
            seps.append(j)
            j += 1
        end = j
        kinds = [self.text[s] for s in seps]
        last = parts[-1]
        when = _WHEN.fullmatch(last[0]) if len(last) == 1 and isinstance(last[0], str) else None
        colons = [s for s in seps if self.text[s] == ":"]
        if when and kinds[-1] == ":" and len(colons) <= 2:
            # A1111 keeps a `|` inside a schedule's parts as text ("[{b|d{:.5]")
            before, after = self._join(parts[:-1], seps[:-1], colons[0] if len(colons) == 2 else None)
            self.spans += [Span(i, i + 1, "schedule"), Span(end, end + 1, "schedule"),
                           Span(seps[-1], seps[-1] + 1, "schedule"), Span(seps[-1] + 1, end, "when")]
            if len(colons) == 2:
                self.spans.append(Span(colons[0], colons[0] + 1, "schedule"))
            return [Scheduled(tuple(before), tuple(after), when.group(1), i)], end + 1
        if seps and all(k == "|" for k in kinds):
            self.spans += [Span(i, i + 1, "alternate"), Span(end, end + 1, "alternate")]
            self.spans += [Span(s, s + 1, "alternate") for s in seps]
            return [Alternate(tuple(tuple(p) for p in parts))], end + 1
        if seps:
            raise _Fail
        self.spans += [Span(i, i + 1, "emphasis"), Span(end, end + 1, "emphasis")]
        return ["[", *parts[0], "]"], end + 1

    def _join(self, parts: list, seps: list[int], split_at: int | None) -> tuple[list, list]:
        """Parts and their `|` separators put back together, split into (before, after) at `split_at`."""
        before: list = []
        after: list = []
        target = after if split_at is None else before
        for k, part in enumerate(parts):
            target += part
            if k < len(seps):
                if seps[k] == split_at:
                    target = after
                else:
                    self._rescan_bar(seps[k])
                    target.append("|")
        return before, after

    def _rescan_bar(self, at: int) -> None:
        self.spans.append(Span(at, at + 1, "warning", "a '|' inside [from:to:when] is plain text (A1111)"))


def parse(text: str) -> tuple[tuple, list[Span]]:
    """The prompt's nodes (str, Scheduled, Alternate) and its highlight spans. An unparsable prompt (for
    A1111) is one text node, with a problem span saying why."""
    parser = _Parser(text)
    try:
        return parser.top(), parser.spans
    except _Unparsable as exc:
        at = exc.args[0]
        why = ("a '|' outside [a|b] turns prompt editing off for this prompt (A1111)" if text[at] == "|"
               else "a backslash at the end turns prompt editing off for this prompt (A1111)")
        return (text,), [Span(at, at + 1, "warning", why)]


def when_step(when: str, steps: int, first: int | None = None) -> int:
    """A1111's step for a `when` as written: with a dot a fraction of `steps`, else a step number; capped.

    In a hires pass (`first`: the first pass's steps) A1111 counts on from the first pass: a fraction has 1
    taken off (1.5 is half-way through the hires pass) and a step number `first` (so 0.5 or a first-pass
    step has already passed there)."""
    value = float(when)
    if "." in when:
        value = (value - (0 if first is None else 1)) * steps
    elif first is not None:
        value -= first
    if not math.isfinite(value):
        shown = when if len(when) <= 24 else when[:20] + "..."
        raise RequestError(f"the step {shown!r} in a [from:to:when] of the prompt is not a finite number")
    return min(steps, int(value))


def _collect(nodes: tuple, steps: int, found: set[int], alternates: list[bool], first: int | None) -> None:
    for node in nodes:
        if isinstance(node, Scheduled):
            step = when_step(node.when, steps, first)
            if step >= 1:
                found.add(step)
            _collect(node.before, steps, found, alternates, first)
            _collect(node.after, steps, found, alternates, first)
        elif isinstance(node, Alternate):
            alternates.append(True)
            for option in node.options:
                _collect(option, steps, found, alternates, first)


def _text_at(nodes: tuple, step: int, steps: int, out: list[str], first: int | None) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, Scheduled):
            chosen = node.before if step <= when_step(node.when, steps, first) else node.after
            _text_at(chosen, step, steps, out, first)
        else:
            _text_at(node.options[(step - 1) % len(node.options)], step, steps, out, first)


def schedule(prompt: str, steps: int, first: int | None = None) -> list[tuple[int, str]]:
    """A1111's prompt schedule: (until_step, text) pairs, the last until `steps`; `first` for a hires pass
    (when_step)."""
    if steps < 1:
        raise RequestError(f"a prompt schedule needs at least 1 step, got {steps}")
    nodes, _ = parse(prompt)
    found, alternates = {steps}, []
    _collect(nodes, steps, found, alternates, first)
    if alternates:
        found.update(range(1, steps + 1))
    result = []
    for step in sorted(found):
        out: list[str] = []
        _text_at(nodes, step, steps, out, first)
        result.append((step, "".join(out)))
    return result


def entry_for(entries: list[tuple[int, str]], call: int) -> int:
    """The index of the entry model call `call` (0-based) uses: the first with call <= until_step. Past the
    last one (second-order samplers call the model more often than `steps`) it is the first entry again,
    as in A1111's reconstruct_cond_batch."""
    for index, (until, _) in enumerate(entries):
        if call <= until:
            return index
    return 0


@dataclass(frozen=True)
class SubPrompt:
    text: str
    weight: float


def split_and(prompt: str) -> list[SubPrompt]:
    """A1111's composable prompt split: sub-prompts between `AND` (a separate word in capitals), each with
    its `:weight` at its end (default 1). A prompt without AND is one sub-prompt."""
    result = []
    for part in _AND.split(prompt):
        match = _SUB_WEIGHT.search(part)
        if match is None:
            result.append(SubPrompt(part, 1.0))
        else:
            result.append(SubPrompt(match.group(1), 1.0 if match.group(2) is None else float(match.group(2))))
    return result


def texts(prompt: str, steps: int, split: bool = True) -> list[str]:
    """The distinct texts a prompt is encoded as over `steps` (its AND sub-prompts' with `split`, as for the
    prompt; the negative prompt is not split), in order of first use."""
    parts = [sub.text for sub in split_and(prompt)] if split else [prompt]
    return list(dict.fromkeys(text for part in parts for _, text in schedule(part, steps)))


def spans(prompt: str, split: bool = True) -> list[Span]:
    """Highlight spans of a prompt box: with `split` (the prompt, not the negative) `AND` and sub-prompt
    weights, then each sub-prompt's constructs. Raises nothing: a hostile prompt gives one problem span."""
    out: list[Span] = []
    offset = 0
    for piece in re.split(r"(\bAND\b)", prompt) if split else [prompt]:
        if piece == "AND":
            out.append(Span(offset, offset + 3, "and"))
        else:
            match = _SUB_WEIGHT.search(piece) if split else None
            body = piece
            if match is not None and match.group(2) is not None:
                body = match.group(1)
                out.append(Span(offset + match.end(1), offset + len(piece.rstrip()), "weight"))
            try:
                found = parse(body)[1]
                for span in found:
                    out.append(Span(offset + span.start, offset + span.end, span.kind, span.message))
                for node in _walk(parse(body)[0]):
                    when_step(node.when, 1)
            except RequestError as exc:
                out.append(Span(offset, offset + len(piece), "problem", str(exc)))
        offset += len(piece)
    return sorted(out, key=lambda s: (s.start, s.end))


def _walk(nodes: tuple):
    for node in nodes:
        if isinstance(node, Scheduled):
            yield node
            yield from _walk(node.before)
            yield from _walk(node.after)
        elif isinstance(node, Alternate):
            for option in node.options:
                yield from _walk(option)
