"""The details pane shows what image files say as text: no markup, no links made of crafted ids, no raw
control or bidi characters."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QUrl

from sdstudio.history.store import Entry
from sdstudio.ui.gallery_details import EntryDetails, details_html

GOOD_ID = "0123456789abcdef0123456789abcdef"
CRAFTED_IDS = [
    '"><img src="file:///etc/hosts"><a href="',
    "x' onclick='y",
    "../../photo",
    "file:///tmp/photo.png",
]


def entry(entry_id: str = GOOD_ID, prompt: str = "a fox", model: str = "sd15", parent_id: str = "") -> Entry:
    return Entry(id=entry_id, created=1.7e9, file=Path("x.png"), prompt=prompt, negative="", model_name=model,
                 model_hash="", sampler="Euler a", scheduler="normal", steps=20, cfg=7.0, seed=1, width=64,
                 height=64, mode="txt2img", parent_id=parent_id, favourite=False, deleted=False)


@pytest.mark.parametrize("crafted", CRAFTED_IDS)
def test_a_crafted_id_never_becomes_a_link_or_markup(qtbot, crafted) -> None:
    parent, child = entry(crafted, prompt="parent"), entry(crafted, prompt="child")
    text = details_html(entry(parent_id=crafted), "", parent, [child])
    assert "<img" not in text and crafted not in text and "href" not in text
    view = EntryDetails()
    qtbot.addWidget(view)
    view.show_entry(entry(parent_id=crafted), "", parent, [child])
    assert "<img" not in view.document().toHtml() and "Made from: parent" in view.toPlainText()


def test_our_ids_are_links_and_only_they_are_followed(qtbot) -> None:
    assert f'href="entry:{GOOD_ID}"' in details_html(entry(parent_id=GOOD_ID), "", entry(), [])
    view = EntryDetails()
    qtbot.addWidget(view)
    followed: list[str] = []
    view.entryLinkActivated.connect(followed.append)
    for crafted in CRAFTED_IDS:
        view.anchorClicked.emit(QUrl(f"entry:{crafted}"))
    view.anchorClicked.emit(QUrl(f"entry:{GOOD_ID}"))
    assert followed == [GOOD_ID]


def test_markup_control_and_bidi_characters_in_values_are_shown_as_text(qtbot) -> None:
    hostile = '<img src="file:///etc/hosts"><b>bold</b>\x1b[2J\u202eevil'
    view = EntryDetails()
    qtbot.addWidget(view)
    view.show_entry(entry(prompt=hostile, model=hostile), f"{hostile}\nSteps: 20", None, [])
    shown = view.toPlainText()
    assert '<img src="file:///etc/hosts"><b>bold</b>\\x1b[2J\\u202eevil' in shown
    assert "\x1b" not in shown and "\u202e" not in shown and "<img" not in view.document().toHtml()
    assert "\nSteps: 20" in shown  # the parameters keep their lines


def test_a_huge_parameters_text_is_cut_and_says_so(qtbot) -> None:
    text = details_html(entry(), "p" * 200_000, None, [])
    assert "more characters)" in text and len(text) < 30_000
