"""Errors the engine raises. Each message is meant for the user: it says what is wrong and what to do."""


class SDStudioError(Exception):
    """Base class of every error a user may see."""


class CheckpointError(SDStudioError):
    """A model file cannot be read: not safetensors, truncated, inconsistent, or missing parts."""


class UnsupportedModelError(CheckpointError):
    """The file is readable but holds an architecture SD Studio does not run."""


class ImageFileError(SDStudioError, ValueError):
    """An image file is refused: more pixels than the decompression-bomb limit, or text chunks too large.
    A ValueError too, so every place that already reports an unreadable image reports this one."""


class ModelNotFound(SDStudioError):
    """The checkpoint an image or request names is not on this machine."""


class RequestError(SDStudioError):
    """A generation request has an invalid parameter (size, steps, strength, ...)."""


class GenerationError(SDStudioError):
    """Generation failed at run time (out of memory, numerical failure)."""


class Cancelled(SDStudioError):
    """The user cancelled the job; nothing was written."""


class PatchError(SDStudioError):
    """A weight patch (LoRA and the like) does not fit the loaded model."""


class NetworkFileError(PatchError):
    """A LoRA / LyCORIS / textual-inversion file cannot be used as asked: unreadable, pickled, made for another
    model family, or with keys that match nothing in the loaded model (never applied partly in silence)."""


class HistoryUnavailable(SDStudioError):
    """The history store cannot be opened or written (damaged index, missing outputs folder)."""


class HistoryReadOnly(HistoryUnavailable):
    """History can be browsed but not changed (read-only data folder, outputs folder missing)."""


class RemoteError(SDStudioError):
    """A remote (A1111-compatible) server refused a job: it answered, with a 4xx and its reason."""


class ServerUnavailable(RemoteError):
    """A remote server cannot be used now: refused or dropped the connection, timed out, answered with a 5xx
    or with something that is not its API's JSON. The message names the server and what happened."""
