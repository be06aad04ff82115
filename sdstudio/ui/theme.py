"""Look and feel: Fusion with a dark palette unless the system asks for light, plus a few accents.

Colours in the style sheet refer to palette roles, so the same sheet works for the light palette. Sizes are
in em or device-independent points, never pixels that would shrink on a 2× display.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory

THEMES = ("system", "dark", "light")
ACCENT = QColor(90, 140, 255)

_SHEET = """
QLabel[role="heading"] { font-weight: 600; padding-top: 0.4em; }
QLabel[role="hint"] { color: palette(placeholder-text); }
QLabel[role="counter"] { color: palette(placeholder-text); }
QLabel[role="counter"][warn="true"] { color: #e0a040; }
QPushButton#generate { background: palette(highlight); color: palette(highlighted-text);
    font-weight: 600; padding: 0.45em 1.2em; border-radius: 0.3em; border: none; }
QPushButton#generate:hover { background: %(accent_hover)s; }
QPushButton#generate:pressed { background: %(accent_pressed)s; }
QFrame#errorBanner { background: %(error_bg)s; border: 1px solid %(error_border)s; border-radius: 0.3em;
    margin: 0.3em; }
QFrame#errorBanner QLabel { color: %(error_fg)s; }
QWidget#scrubber { background: palette(window); }
QToolBar { spacing: 0.2em; border: none; }
QMenuBar, QStatusBar { background: palette(window); color: palette(window-text); }
QToolButton:checked { background: palette(highlight); color: palette(highlighted-text);
    border: 1px solid palette(dark); border-radius: 0.2em; }
"""


def is_dark(theme: str) -> bool:
    """Dark for "dark", light for "light"; "system" follows the platform and is dark when it does not say."""
    if theme in ("dark", "light"):
        return theme == "dark"
    return QGuiApplication.styleHints().colorScheme() != Qt.ColorScheme.Light


def dark_palette() -> QPalette:
    p = QPalette()
    window, base, text = QColor(37, 38, 41), QColor(27, 28, 30), QColor(222, 224, 228)
    roles = {
        QPalette.ColorRole.Window: window, QPalette.ColorRole.WindowText: text,
        QPalette.ColorRole.Base: base, QPalette.ColorRole.AlternateBase: QColor(33, 34, 37),
        QPalette.ColorRole.ToolTipBase: QColor(50, 52, 56), QPalette.ColorRole.ToolTipText: text,
        QPalette.ColorRole.PlaceholderText: QColor(135, 138, 145), QPalette.ColorRole.Text: text,
        QPalette.ColorRole.Button: QColor(48, 50, 54), QPalette.ColorRole.ButtonText: text,
        QPalette.ColorRole.BrightText: QColor(255, 90, 90), QPalette.ColorRole.Light: QColor(70, 72, 78),
        QPalette.ColorRole.Midlight: QColor(58, 60, 65), QPalette.ColorRole.Mid: QColor(44, 46, 50),
        QPalette.ColorRole.Dark: QColor(20, 21, 23), QPalette.ColorRole.Shadow: QColor(10, 10, 12),
        QPalette.ColorRole.Highlight: ACCENT, QPalette.ColorRole.HighlightedText: QColor(255, 255, 255),
        QPalette.ColorRole.Link: ACCENT.lighter(120),
    }
    for role, colour in roles.items():
        p.setColor(role, colour)
    disabled = QColor(120, 122, 128)
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Highlight, QColor(70, 72, 78))
    return p


def apply_theme(app: QApplication, theme: str = "system") -> None:
    app.setStyle(QStyleFactory.create("Fusion"))
    dark = is_dark(theme)
    palette = dark_palette() if dark else app.style().standardPalette()
    if not dark:
        palette.setColor(QPalette.ColorRole.Highlight, ACCENT.darker(115))
    app.setPalette(palette)
    app.setStyleSheet(_SHEET % {
        "accent_hover": palette.color(QPalette.ColorRole.Highlight).lighter(112).name(),
        "accent_pressed": palette.color(QPalette.ColorRole.Highlight).darker(112).name(),
        "error_bg": "#4a2328" if dark else "#fbe3e4",
        "error_border": "#8c3a42" if dark else "#e3a3a8",
        "error_fg": "#ffd9dc" if dark else "#6b1a21",
    })
