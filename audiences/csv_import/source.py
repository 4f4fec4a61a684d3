"""Reading an import file: encoding check, delimiter, header check, then raw blocks of records.

A file that cannot be read as a whole (wrong encoding, wrong header) is refused
before anything is written, with a message naming the line or the columns; a
row that is merely wrong is rejected later, on its own, by the row validators.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

Row = tuple[int, list[str]]  # (line number in the file, cells)


class FileRefused(Exception):
    """The whole file is refused; nothing was imported. The message says what to fix."""


@dataclass(frozen=True)
class Columns:
    required: tuple[str, ...]
    optional: tuple[str, ...]
    one_of: tuple[tuple[str, ...], ...] = ()  # at least one column of each group

    @property
    def known(self) -> tuple[str, ...]:
        return self.required + self.optional


def _codec(encoding: str) -> str:
    name = codecs.lookup(encoding).name
    return "utf-8-sig" if name == "utf-8" else name  # a BOM from Excel is not part of the header


def check_encoding(path: Path, encoding: str = "utf-8") -> None:
    """Decode the whole file once (fast, in blocks) so a bad byte is reported with its line."""
    decoder = codecs.getincrementaldecoder(_codec(encoding))()
    line = 1
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                buf: bytes = exc.object
                bad_line = line + buf[: exc.start].count(b"\n")
                start = buf.rfind(b"\n", 0, exc.start) + 1
                end = buf.find(b"\n", exc.start)
                snippet = buf[start : end if end >= 0 else len(buf)][:120].decode(encoding, "replace")
                raise FileRefused(
                    f"{path}: line {bad_line} is not valid {encoding.upper()} (byte 0x{buf[exc.start]:02x} "
                    f"in {snippet.strip()!r}). The file was probably saved as Latin-1/Windows-1252: "
                    "re-save it as UTF-8, or import it with --encoding cp1252. Nothing was imported."
                ) from None
            line += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise FileRefused(
                f"{path}: the file ends in the middle of a {encoding.upper()} character (line {line}); "
                "re-save it as UTF-8. Nothing was imported."
            ) from None


def _delimiter(first_line: str) -> str:
    """Comma by default; semicolon (French Excel) or tab when the header clearly uses it."""
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def check_header(path: Path, header: list[str], columns: Columns) -> list[str]:
    names = [h.strip().lower() for h in header]
    problems = []
    missing = [c for c in columns.required if c not in names]
    if missing:
        problems.append("missing column(s): " + ", ".join(missing))
    for group in columns.one_of:
        if not any(c in names for c in group):
            problems.append("one of these columns is needed: " + " or ".join(group))
    unknown = []
    for name in names:
        if name not in columns.known:
            close = difflib.get_close_matches(name, columns.known, n=1)
            unknown.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if unknown:
        problems.append("unknown column(s): " + ", ".join(unknown))
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append("column(s) given twice: " + ", ".join(dupes))
    if problems:
        raise FileRefused(
            f"{path}: line 1 (header) is wrong: {'; '.join(problems)}. "
            f"Expected columns: {', '.join(columns.required)} (required), {', '.join(columns.optional)} "
            "(optional); see audiences/README.md. Nothing was imported."
        )
    return names


@dataclass(frozen=True)
class Source:
    """A checked file: its header, its delimiter and the open text stream positioned after the header."""

    header: list[str]
    delimiter: str
    stream: TextIO


def open_source(path: Path, columns: Columns, encoding: str = "utf-8") -> Source:
    """Check the encoding and the header; nothing is parsed beyond line 1 yet."""
    if not path.is_file():
        raise FileRefused(f"{path}: no such file")
    check_encoding(path, encoding)
    fh = path.open("r", encoding=_codec(encoding), newline="")
    first = fh.readline()
    if not first.strip():
        fh.close()
        raise FileRefused(
            f"{path}: the file is empty; line 1 must be the header ({', '.join(columns.required)}, ...)"
        )
    delimiter = _delimiter(first)
    header = check_header(path, next(csv.reader([first], delimiter=delimiter)), columns)
    return Source(header, delimiter, fh)


Block = tuple[int, str]  # (line number of the block's first line, raw text of whole records)


def blocks(stream: TextIO, records: int) -> Iterator[Block]:
    """Raw text of about ``records`` records at a time, never cutting a quoted cell's line break.

    Why raw text: parsing the CSV is then done by the validation workers, in
    parallel, and a block of text is much cheaper to send to them than parsed cells.
    A line ends a record when the quotes seen since the record began are balanced
    (a quote inside a quoted cell is doubled, so the parity still holds).
    """
    with stream:
        first, line_no, count, open_quotes = 2, 2, 0, False
        lines: list[str] = []
        for line in stream:
            lines.append(line)
            line_no += 1
            if line.count('"') % 2:
                open_quotes = not open_quotes
            if not open_quotes:
                count += 1
                if count >= records:
                    yield first, "".join(lines)
                    first, count, lines = line_no, 0, []
        if lines:
            yield first, "".join(lines)


def parse_block(block: Block, delimiter: str) -> list[Row]:
    """The (line, cells) rows of a block, blank rows skipped, line numbers as in the file."""
    first, raw = block
    reader = csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter)
    out: list[Row] = []
    start = first
    for cells in reader:
        line, start = start, first + reader.line_num  # reader.line_num counts the block's lines read so far
        if "".join(cells).strip():  # a blank line or a row of empty cells
            out.append((line, cells))
    return out
