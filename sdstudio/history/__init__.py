"""History: every generation stored with its parameters. Never imports Qt."""

from sdstudio.history.importing import Imported, import_image
from sdstudio.history.parameters import format_parameters, parse_parameters, request_from_parameters
from sdstudio.history.png import read_png_parameters, save_png
from sdstudio.history.store import Entry, HistoryStore

__all__ = [
    "Entry",
    "HistoryStore",
    "Imported",
    "format_parameters",
    "import_image",
    "parse_parameters",
    "read_png_parameters",
    "request_from_parameters",
    "save_png",
]
