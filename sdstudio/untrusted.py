"""Text that came from a file (PNG metadata, tensor names, safetensors headers), made safe to show.

Such text may hold terminal escape sequences (ESC [2J clears the screen and the next line can print a fake
"OK"), carriage returns that overwrite what was printed, bidirectional overrides that show a name reversed
(Unicode TR #9, "Trojan Source", CVE-2021-42574), lone surrogates that make `print` raise, or a megabyte
of text. `printable` replaces each such character with a visible escape (``\\x1b``, ``\\u202e``) and caps
the length, so what is shown is what the file holds. No torch, no Qt: every layer calls it.
"""

from __future__ import annotations

LIMIT = 2000

_C0 = range(0x00, 0x20)
_DEL_AND_C1 = range(0x7F, 0xA0)
# Bidi embeddings/overrides/isolates and the marks, plus the separators that act as line breaks.
_FORMAT = (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C, 0x2028, 0x2029)
_SURROGATES = range(0xD800, 0xE000)


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_ESCAPES = {code: _escape(code) for group in (_C0, _DEL_AND_C1, _FORMAT, _SURROGATES) for code in group}
_ONE_LINE = str.maketrans(_ESCAPES)
_MULTILINE = str.maketrans({code: text for code, text in _ESCAPES.items() if code not in (0x0A, 0x09)})


def printable(text: object, limit: int = LIMIT, *, multiline: bool = True) -> str:
    """`text` (str() of anything else) with control, bidi and surrogate characters shown as escapes and at
    most `limit` characters of it kept, the cut said. multiline=True keeps newlines and tabs."""
    text = text if isinstance(text, str) else str(text)
    kept = text[:limit].translate(_MULTILINE if multiline else _ONE_LINE)
    cut = len(text) - limit
    return kept + (f"… ({cut} more characters)" if cut > 0 else "")


def quoted(text: object, limit: int = 200) -> str:
    """A name for a one-line message: a string in single quotes, anything else (a list, a number read from a
    header) as its repr, both escaped and capped by `printable`."""
    if isinstance(text, str):
        return f"'{printable(text, limit, multiline=False)}'"
    return printable(repr(text), limit, multiline=False)
