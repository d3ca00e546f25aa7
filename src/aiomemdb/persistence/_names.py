"""File names for record ids that stay distinct on case-insensitive and normalising file systems.

Layout 1 (:func:`aiomemdb._codec.object_name`, still used for S3 keys) keeps ``[A-Za-z0-9_-]`` as they are and
percent-escapes every other UTF-8 byte. On macOS's APFS and Windows' NTFS, which compare names ignoring case,
``Ada.json`` and ``ada.json`` are then one file. Layout 2 (:func:`folded_name`) keeps only ``[a-z0-9_-]`` and
escapes everything else, upper-case letters included, as ``%XX`` with upper-case hex digits:

- ``Ada`` -> ``%41da``, ``ada`` -> ``ada``; ``é`` (NFC, U+00E9) -> ``%C3%A9``, ``e\\u0301`` (NFD) -> ``e%CC%81``.
- A name is pure ASCII, so Unicode normalisation (NFC/NFD) leaves it unchanged, and it is injective under
  case folding: ``%`` is never literal, so a folded name still parses into the same escapes and letters.
- Windows device names (``con``, ``nul``, ``com1``, ...) get their first letter escaped (``%63on``), which no
  other id produces.
- Names over 180 characters keep a readable start plus ``~`` and the SHA-256 of the id (lower-case hex).

Both layouts decode with the same :func:`aiomemdb._codec.id_from_object_name` (percent-decoding), so a file's
id can be recovered from its name whichever layout wrote it.
"""

from __future__ import annotations

import hashlib

from aiomemdb._codec import object_name

__all__ = ["LAYOUT", "LEGACY_LAYOUT", "folded_name", "name_for"]

#: The layout this version writes, and the one a directory without a ``LAYOUT`` file was written with.
LAYOUT = 2
LEGACY_LAYOUT = 1

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-")
_MAX_NAME = 180
_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
)


def folded_name(record_id: str) -> str:
    """The layout-2 file name (without extension) of ``record_id``."""
    raw = record_id.encode("utf-8", "surrogatepass")
    escaped = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)
    if escaped in _DEVICES:
        escaped = f"%{raw[0]:02X}{escaped[1:]}"
    if len(escaped) <= _MAX_NAME:
        return escaped
    return f"{escaped[:100]}~{hashlib.sha256(raw).hexdigest()}"


def name_for(layout: int, record_id: str) -> str:
    """The file name of ``record_id`` in ``layout``."""
    return folded_name(record_id) if layout >= LAYOUT else object_name(record_id)
