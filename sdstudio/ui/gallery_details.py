"""The gallery's detail view: the selected entry's parameters text and its lineage as links.

Links have the form ``entry:<id>``; following one asks the gallery to select that entry, which is how
the user walks up (to the image this one was made from) and down (to images made from it).

Everything shown came from image files, so every value is escaped twice over: `printable` shows control
and bidi characters as escapes, `html.escape` keeps markup out; only ids of our own format become links.
"""

from __future__ import annotations

import html
import time

from PySide6.QtCore import QUrl, Signal
from PySide6.QtWidgets import QTextBrowser, QWidget

from sdstudio.history.record import is_entry_id
from sdstudio.history.store import Entry
from sdstudio.untrusted import printable

LINK_SCHEME = "entry"
MAX_CHILD_LINKS = 12
MAX_PARAMETERS = 20_000  # characters of parameters text shown; real prompts are far shorter


def _text(value: str, limit: int = 200, multiline: bool = False) -> str:
    return html.escape(printable(value, limit, multiline=multiline))


def _snippet(entry: Entry, length: int = 48) -> str:
    prompt = entry.prompt.replace("\n", " ").strip() or "(no prompt)"
    return _text(prompt if len(prompt) <= length else prompt[:length] + "…", length + 1)


def _link(entry: Entry) -> str:
    if not is_entry_id(entry.id):  # an id of another shape could carry markup or a URL: no link
        return _snippet(entry)
    return f'<a href="{LINK_SCHEME}:{entry.id}">{_snippet(entry)}</a>'


def details_html(entry: Entry, parameters: str, parent: Entry | None, children: list[Entry]) -> str:
    """Rich text for one entry; every piece of user text is escaped."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.created))
    facts = [when, entry.model_name or "unknown model", entry.mode, f"{entry.width}×{entry.height}"]
    star = "★ " if entry.favourite else ""
    trash = " <i>(in the trash)</i>" if entry.deleted else ""
    parts = [f"<p><b>{star}</b>{_text(' · '.join(facts), 400)}{trash}</p>"]
    shown = parameters or "This image carries no parameters."
    parts.append(f'<p style="white-space: pre-wrap">{_text(shown, MAX_PARAMETERS, multiline=True)}</p>')
    if entry.parent_id:
        parts.append(f"<p>Made from: {_link(parent) if parent else '<i>an entry no longer in history</i>'}</p>")
    if children:
        links = ", ".join(_link(child) for child in children[:MAX_CHILD_LINKS])
        more = f" and {len(children) - MAX_CHILD_LINKS} more" if len(children) > MAX_CHILD_LINKS else ""
        parts.append(f"<p>Used for: {links}{more}</p>")
    return "".join(parts)


class EntryDetails(QTextBrowser):
    """Read-only parameters of the current entry; `entryLinkActivated(id)` when a lineage link is clicked."""

    entryLinkActivated = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setPlaceholderText("Select an image to see how it was made.")
        self.anchorClicked.connect(self._follow)

    def show_entry(self, entry: Entry | None, parameters: str = "", parent: Entry | None = None,
                   children: list[Entry] | None = None) -> None:
        self.setHtml(details_html(entry, parameters, parent, children or []) if entry is not None else "")

    def _follow(self, url: QUrl) -> None:
        if url.scheme() == LINK_SCHEME and is_entry_id(url.path()):
            self.entryLinkActivated.emit(url.path())
