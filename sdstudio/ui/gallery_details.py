"""The gallery's detail view: the selected entry's parameters text and its lineage as links.

Links have the form ``entry:<id>``; following one asks the gallery to select that entry, which is how
the user walks up (to the image this one was made from) and down (to images made from it).
"""

from __future__ import annotations

import html
import time

from PySide6.QtCore import QUrl, Signal
from PySide6.QtWidgets import QTextBrowser, QWidget

from sdstudio.history.store import Entry

LINK_SCHEME = "entry"
MAX_CHILD_LINKS = 12


def _snippet(entry: Entry, length: int = 48) -> str:
    prompt = entry.prompt.replace("\n", " ").strip() or "(no prompt)"
    return html.escape(prompt if len(prompt) <= length else prompt[:length] + "…")


def _link(entry: Entry) -> str:
    return f'<a href="{LINK_SCHEME}:{entry.id}">{_snippet(entry)}</a>'


def details_html(entry: Entry, parameters: str, parent: Entry | None, children: list[Entry]) -> str:
    """Rich text for one entry; every piece of user text is escaped."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.created))
    facts = [when, entry.model_name or "unknown model", entry.mode, f"{entry.width}×{entry.height}"]
    star = "★ " if entry.favourite else ""
    trash = " <i>(in the trash)</i>" if entry.deleted else ""
    parts = [f"<p><b>{star}</b>{html.escape(' · '.join(facts))}{trash}</p>"]
    shown = parameters or "This image carries no parameters."
    parts.append(f'<p style="white-space: pre-wrap">{html.escape(shown)}</p>')
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
        if url.scheme() == LINK_SCHEME:
            self.entryLinkActivated.emit(url.path())
