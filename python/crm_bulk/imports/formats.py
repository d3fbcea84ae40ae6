"""Text formats of import files: which encoding, which delimiter, and UTF-8 bytes out of either.

The encoding is the byte order mark's when there is one (UTF-8, UTF-16 LE/BE), else the `encoding`
parameter's (any codec Python knows: cp1252, latin-1, ...), else UTF-8. `Utf8Stream` turns the body into
UTF-8 bytes piece by piece (an incremental decoder, so a character split between two pieces is joined, and
the whole file is never held), and refuses undecodable bytes with their line and column. The delimiter is
the `delimiter` parameter, else the one of `, ; TAB |` the header row holds most often outside quotes.
"""

from __future__ import annotations

import codecs
from typing import Any

from crm_bulk.errors import ValidationError

UTF8 = "utf-8"
DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")
# Names a query string can carry for the delimiters that are awkward to type or to escape.
DELIMITER_NAMES: dict[str, str] = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, UTF8),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Enough bytes to tell every byte order mark above apart.
BOM_BYTES = 3


def check_encoding(name: str | None) -> str | None:
    """The codec's canonical name for the `encoding` parameter; 422 for one Python does not know."""
    if name is None or not name.strip():
        return None
    try:
        info = codecs.lookup(name.strip())
    except LookupError:
        raise ValidationError(
            f"unknown encoding {name!r} (e.g. utf-8, utf-16, cp1252, latin-1)",
            field="encoding",
            code="unknown_encoding",
        ) from None
    if not _is_text_codec(info):
        raise ValidationError(f"{name!r} is not a text encoding", field="encoding", code="unknown_encoding")
    return info.name


def _is_text_codec(info: codecs.CodecInfo) -> bool:
    # Byte-to-byte codecs (base64, zlib, rot13 ...) are in the registry too; only text encodings are marked
    # as such.
    return bool(getattr(info, "_is_text_encoding", True))


def check_delimiter(value: str | None) -> str | None:
    """The `delimiter` parameter as one character; 422 for anything else."""
    if value is None or value == "":
        return None
    delimiter = DELIMITER_NAMES.get(value.lower(), value)
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise ValidationError(
            f"delimiter must be one character other than a quote or a line break (or tab), not {value!r}",
            field="delimiter",
            code="invalid_value",
        )
    return delimiter


def sniff_delimiter(header_line: str) -> str:
    """The delimiter of a header row: the candidate found most often outside quotes (a comma on a tie)."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for ch in header_line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def detect_encoding(head: bytes, given: str | None) -> tuple[str, int]:
    """(encoding, length of its byte order mark) of a file starting with `head`."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom)
    return given or UTF8, 0


class Utf8Stream:
    """A body in some encoding in, UTF-8 out, piece by piece; the byte order mark is dropped."""

    def __init__(self, given: str | None) -> None:
        self._given = given
        self._head = bytearray()
        self.encoding: str | None = None
        self._decoder: codecs.IncrementalDecoder | None = None
        self._lines = 0
        self._column = 0

    def feed(self, data: bytes, *, final: bool = False) -> bytes:
        """UTF-8 bytes of every whole character in `data` (and what came before it)."""
        if self._decoder is None:
            self._head += data
            if len(self._head) < BOM_BYTES and not final:
                return b""
            data = self._start()
        # UTF-8 goes through the decoder too: that checks it, and keeps a character split between two
        # pieces for the next one (re-encoding costs about a millisecond per megabyte).
        return self._decode(data, final=final).encode(UTF8)

    def _start(self) -> bytes:
        head = bytes(self._head)
        self._head.clear()
        encoding, bom = detect_encoding(head, self._given)
        self.encoding = encoding
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        return head[bom:]

    def _decode(self, data: bytes, *, final: bool) -> str:
        assert self._decoder is not None
        try:
            text: str = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise self._undecodable(exc) from None
        self._advance(text)
        return text

    def _advance(self, text: str) -> None:
        newlines = text.count("\n")
        if newlines:
            self._lines += newlines
            self._column = len(text) - text.rfind("\n") - 1
        else:
            self._column += len(text)

    def _undecodable(self, exc: UnicodeDecodeError) -> ValidationError:
        # The characters before the bad bytes place them: decode that prefix on its own.
        before = _decoded_prefix(exc)
        self._advance(before)
        byte = exc.object[exc.start : exc.start + 1].hex()
        return ValidationError(
            f"line {self._lines + 1}, column {self._column + 1}: byte 0x{byte} cannot be read as "
            f"{self.encoding} (pass encoding=, e.g. cp1252 or latin-1, for files in another encoding)",
            field="body",
            code="undecodable",
        )


def _decoded_prefix(exc: UnicodeDecodeError) -> str:
    prefix: Any = exc.object[: exc.start]
    try:
        return str(codecs.decode(prefix, exc.encoding, errors="replace"))
    except LookupError:
        return ""
