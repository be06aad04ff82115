"""AUTOMATIC1111's prompt emphasis syntax (`modules/prompt_parser.py`, parse_prompt_attention).

    (text)        weight x 1.1, nested brackets multiply: ((text)) x 1.21
    (text:1.3)    weight x 1.3 (spaces allowed around the number)
    [text]        weight / 1.1
    \\( \\) \\[ \\] \\\\  literal characters
    BREAK         (capitals, a separate word) starts a new 75-token chunk

Unbalanced brackets behave as in A1111: a bracket left open applies to the end of the prompt, a stray
closing bracket is literal text. Weights are multiplied in the same order as A1111, so the floats are
identical (1.3 * 1.1 * 1.1 = 1.5730000000000004). One deliberate difference: A1111 multiplies a BREAK inside
brackets like text, which turns it into the literal word "BREAK"; here BREAK is always a chunk break.
"""

from __future__ import annotations

import re

from sdstudio.engine.errors import RequestError

BREAK = ("BREAK", -1.0)

_TOKENS = re.compile(
    r"""
    \\\( | \\\) | \\\[ | \\] | \\\\ | \\     # escapes, and a lone backslash
    | \( | \[                               # openers
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)      # explicit weight closing a round bracket
    | \) | ]                                # closers
    | [^\\()\[\]:]+                         # plain text
    | :                                     # a colon that is not a weight
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
ROUND = 1.1
SQUARE = 1 / 1.1


def parse_prompt(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) runs; BREAK markers appear as `BREAK` = ("BREAK", -1.0).

    >>> parse_prompt("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    """
    parts: list[list] = []  # [text, weight, is_break]
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for part in parts[start:]:
            if not part[2]:
                part[1] *= factor

    for match in _TOKENS.finditer(text):
        token, weight = match.group(0), match.group("weight")
        if token.startswith("\\"):
            parts.append([token[1:], 1.0, False])
        elif token == "(":
            round_open.append(len(parts))
        elif token == "[":
            square_open.append(len(parts))
        elif weight is not None and round_open:
            multiply(round_open.pop(), _number(weight))
        elif token == ")" and round_open:
            multiply(round_open.pop(), ROUND)
        elif token == "]" and square_open:
            multiply(square_open.pop(), SQUARE)
        else:
            for i, piece in enumerate(_BREAK.split(token)):
                if i:
                    parts.append([*BREAK, True])
                parts.append([piece, 1.0, False])
    for start in round_open:
        multiply(start, ROUND)
    for start in square_open:
        multiply(start, SQUARE)
    return _merge(parts)


def _number(weight: str) -> float:
    try:
        return float(weight)
    except ValueError:
        message = f"'{weight}' in the prompt is not a number; write a weight like (word:1.2)"
        raise RequestError(message) from None


def _merge(parts: list[list]) -> list[tuple[str, float]]:
    """Join neighbouring runs of equal weight, as A1111 does; BREAK markers stay separate."""
    merged: list[list] = []
    for part in parts:
        if merged and not part[2] and not merged[-1][2] and merged[-1][1] == part[1]:
            merged[-1][0] += part[0]
        else:
            merged.append(part)
    if not merged:
        return [("", 1.0)]
    return [BREAK if is_break else (text, weight) for text, weight, is_break in merged]
