"""History: every generation stored with its parameters. Never imports Qt."""

from sdstudio.history.file_parameters import FileParameters, read_file_parameters
from sdstudio.history.parameters import format_parameters, parse_parameters, request_from_parameters
from sdstudio.history.png import read_png_parameters, save_png
from sdstudio.history.store import Entry, HistoryStore

__all__ = [
    "Entry",
    "FileParameters",
    "HistoryStore",
    "format_parameters",
    "parse_parameters",
    "read_file_parameters",
    "read_png_parameters",
    "request_from_parameters",
    "save_png",
]
