"""Errors as a command-line user reads them: one line, naming the flag (not the Python parameter) or the file."""

from __future__ import annotations

import re
import traceback

# ops/ and models/ speak of their keyword arguments; the CLI user knows the flags that set them.
PARAMETER_FLAGS = {
    "flame_template": "--flame-template",
    "nphm_checkpoint": "--nphm-checkpoint",
    "identity_code": "--identity",
    "max_duration_s": "--max-seconds",
    "encoder_path": "--encoder",
    "video_size": "--size",
}


def speak_flags(message: str) -> str:
    """`pass flame_template=<x>` -> `pass --flame-template <x>`; `device 'cuda' ...` -> `--device 'cuda' ...`."""
    for name, flag in PARAMETER_FLAGS.items():
        message = re.sub(rf"\b{name}=", f"{flag} ", message)
        message = re.sub(rf"\b{name}\b", flag, message)
    return re.sub(r"^device\b", "--device", message)


def one_line(error: BaseException) -> str:
    """The error's message on one line (its first line when it has several: ffmpeg's stderr follows)."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, KeyError) and text.startswith(("'", '"')):
        text = text.strip("'\"")
    first = text.splitlines()[0].strip()
    return speak_flags(first)


def error_line(command: str, error: BaseException) -> str:
    """`facetalk <command>: error: <message>`, with the exception type when it is not one of ours."""
    message = one_line(error)
    if not isinstance(error, (ValueError, OSError, RuntimeError, LookupError)):
        message = f"{type(error).__name__}: {message}"
    return f"facetalk {command}: error: {message}"


def traceback_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))
