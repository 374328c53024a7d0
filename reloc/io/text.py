"""Text files users give reloc: read as UTF-8, or refused naming the file and the first bad byte."""

from __future__ import annotations

from pathlib import Path

from ..errors import RelocError


def utf8_text(path: Path, what: str, error: type[RelocError] = RelocError) -> str:
    """The content of ``path`` (an existing file); ``error`` naming it when it is not UTF-8 text."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as decode_error:
        byte = f"byte {decode_error.start} is {data[decode_error.start]:#04x}"
        raise error(f"{path}: {what} is not UTF-8 text ({byte})") from None
