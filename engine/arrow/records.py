"""Where each CSV record starts: RFC 4180 record boundaries found in the raw bytes.

pyarrow's streaming reader parses the records (quoted fields, doubled quotes, line breaks inside
quotes, LF or CRLF); :class:`RecordScanner` reads the same bytes on their way to pyarrow and finds,
for every record, the physical line it starts on, so that every staged or quarantined row names
its line. It also proves the reading exact: pyarrow must find as many records as the scanner, and
every quote must sit where RFC 4180 allows one (opening a field, closing it before a delimiter or
a line end, or doubled inside it). A file where that fails is really broken somewhere, and
:func:`line_by_line` then reads it record by record, quarantining only the records that are.

Cost on the common path: a chunk without quotes (and without blank lines) is only counted
(``bytes.count`` of line ends); only chunks with quotes are scanned with numpy.

pyarrow reads through :class:`WholeCRLF`, which keeps a CRLF inside a quoted field from being
split between two reads (pyarrow would drop its "\n").
"""

from __future__ import annotations

import codecs
import csv
import io
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np

from core.errors import FileRejected
from core.zones import CsvOptions

HEADER_LIMIT = 1 << 20  # the header line must end within the first MiB
MAX_RECORD_BYTES = 4 << 20  # a record (a quoted field with line breaks) must fit well within one read block
_NL, _CR = 10, 13
_TAIL = 1 << 16  # bytes kept of the file's end, to find trailing blank lines
BOM = codecs.BOM_UTF8


class NeedsLineByLine(Exception):
    """The fast reading cannot be proven exact for this file (see RecordScanner.anomaly)."""


class ReadAhead:
    """A read-through for pyarrow that bounds how far its streaming reader reads ahead.

    pyarrow's reader fetches blocks on an IO thread up to 32 ahead of the batches taken (256 MiB
    of CSV at 8 MiB blocks), which was most of the engine's peak memory and bought nothing:
    parsing and validating are the slow part. A block becomes one batch, which pyarrow hands
    over once it has read as far as the end of the block's last record. So reading may run
    ``blocks`` blocks' worth of bytes ahead of the batches consumed (:func:`read_ahead_for`),
    counted in bytes because :class:`WholeCRLF` may return less than was asked. A read that
    waits ``patience`` seconds goes anyway: a file pyarrow reads differently is slowed, never
    stuck, and ``stalls`` counts it.
    """

    def __init__(self, raw, block_size: int, blocks: int, patience: float = 1.0):
        self._raw = raw
        self._block, self._blocks, self._patience = block_size, blocks, patience
        self._read = self._consumed = 0  # bytes read, batches consumed
        self._released = False
        self.stalls = 0
        self.most_ahead = 0.0  # the most blocks' worth of bytes read ahead of the batches consumed
        self._cond = threading.Condition()
        self.closed = False

    def _may_read(self, n: int) -> bool:
        return self._released or self._read + n <= (self._consumed + self._blocks) * self._block

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            if not self._cond.wait_for(lambda: self._may_read(max(n, 0)), timeout=self._patience):
                self.stalls += 1
        b = self._raw.read(n)
        with self._cond:
            self._read += len(b)
            self.most_ahead = max(self.most_ahead, self._read / self._block - self._consumed)
        return b

    def batches(self, reader) -> Iterator:
        """``reader``'s batches, each counted as consumed when handed over; reads are let go
        when the iteration ends, however it ends, so pyarrow's thread is never left waiting."""
        try:
            for batch in reader:
                with self._cond:
                    self._consumed += 1
                    self._cond.notify_all()
                yield batch
        finally:
            with self._cond:
                self._released = True
                self._cond.notify_all()

    def close(self) -> None:  # the owner of the raw stream closes it
        self.closed = True


def read_ahead_for(block_size: int) -> int:
    """Blocks pyarrow needs read before it hands over the first of them: that block, and those a
    record starting in it may run into (records of up to MAX_RECORD_BYTES). 2 at 8 MiB blocks;
    many with the tiny blocks of the tests."""
    return 1 + -(-MAX_RECORD_BYTES // block_size)


class WholeCRLF:
    """A read-through for pyarrow that never ends a read with "\r" (before the end of the stream):
    trailing carriage returns are handed over at the start of the next read. pyarrow (apache/arrow
    #51368, 26.0 included) drops the "\n" of a CRLF inside a quoted field when the "\r" ends one
    read and the "\n" starts the next."""

    def __init__(self, raw):
        self._raw = raw
        self._held = b""
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        out, self._held = self._held, b""
        if n is None or n < 0:
            return out + self._raw.read()
        while True:
            b = self._raw.read(max(n - len(out), 1))
            out += b
            if not b:
                return out  # the end of the stream: what was held goes
            keep = out.rstrip(b"\r")
            if keep:
                self._held = out[len(keep):]
                return keep
            # nothing but carriage returns so far (a broken file): read on

    def close(self) -> None:  # the owner of the raw stream closes it
        self.closed = True


def decoder_name(opts: CsvOptions) -> str:
    return "utf-8-sig" if codecs.lookup(opts.encoding).name == "utf-8" else opts.encoding


class RecordScanner:
    """A read-through wrapper (pyarrow reads from it) that records the start line of every data
    record, in order, for the batches to take as they come (:meth:`take`).

    pyarrow reads on its own thread, so the scanner's queue is filled there and drained by the
    thread processing batches; a batch's bytes are always read, hence scanned, before pyarrow
    returns the batch."""

    def __init__(self, raw: BinaryIO, opts: CsvOptions, hasher=None):
        self._raw = raw
        self._hasher = hasher
        self._q, self._d = ord(opts.quote_char), ord(opts.delimiter)
        self._qb = opts.quote_char.encode()
        self.line = 1  # the physical line the next byte is on
        self.in_quotes = False
        self.rec_line = 1  # start line of the record in progress
        self.rec_state = 0  # what the record in progress holds: 0 nothing, 1 only "\r", 2 content
        self.prev = _NL  # the byte before the next one; the start of the file counts as a line start
        self.header_seen = False
        self.records = 0  # data records found (the header excluded, blank lines not counted)
        self.taken = 0
        self.anomaly: tuple[int, str] | None = None  # (line, what): the first place RFC 4180 reading fails
        self.size = 0
        self.eof = False
        self._pending: tuple[int, int] | None = None  # (line, kind) of a quote check that needs the next bytes
        self._lead: bytes | None = b""  # the file's first bytes while they may be a split BOM
        self._plain_tail: bytes | None = b""  # the last bytes, while the end is read in plain chunks
        self._lines: deque[np.ndarray] = deque()
        self._head = 0  # offset into _lines[0] already taken
        self._lock = threading.Lock()
        self.closed = False

    # -- the file protocol pyarrow uses ---------------------------------------------------------
    def read(self, n: int = -1) -> bytes:
        b = self._raw.read(n)
        if self._hasher is not None and b:
            self._hasher.update(b)
        if not b:
            if not self.eof:
                self._finish()
            return b
        self.size += len(b)
        chunk = b
        if self._lead is not None:  # the BOM is skipped, even when it comes in more than one read
            chunk = self._lead + b
            if len(chunk) < len(BOM) and BOM.startswith(chunk):
                self._lead = chunk
                return b
            self._lead = None
            chunk = chunk.removeprefix(BOM)
        if chunk:
            self._scan(chunk)
        return b

    def close(self) -> None:  # the owner of the raw stream closes it
        self.closed = True

    # -- results --------------------------------------------------------------------------------
    def take(self, n: int) -> np.ndarray:
        """The start lines of the next ``n`` data records; NeedsLineByLine if pyarrow found more
        records than there are (e.g. a bare carriage return it read as a line end)."""
        out, need = [], n
        with self._lock:
            if self.records - self.taken < n:
                raise NeedsLineByLine
            while need:
                arr = self._lines[0]
                part = arr[self._head:self._head + need]
                out.append(part)
                need -= len(part)
                self._head += len(part)
                if self._head == len(arr):
                    self._lines.popleft()
                    self._head = 0
            self.taken += n
        if not out:  # pyarrow returns empty batches for blocks of blank lines
            return np.empty(0, dtype=np.int64)
        return out[0] if len(out) == 1 else np.concatenate(out)

    def proven(self, records_read: int) -> bool:
        return self.eof and self.anomaly is None and records_read == self.records == self.taken

    # -- scanning -------------------------------------------------------------------------------
    def _emit(self, lines: np.ndarray) -> None:
        if not self.header_seen and len(lines):
            self.header_seen = True
            lines = lines[1:]
        if len(lines):
            with self._lock:
                self._lines.append(lines)
                self.records += len(lines)

    def _flag(self, line: int, what: str) -> None:
        if self.anomaly is None:
            self.anomaly = (line, what)

    def _scan(self, chunk: bytes) -> None:
        if self._pending is not None:
            self._resolve_pending(chunk)
        if not self.in_quotes and self._qb not in chunk:  # memchr: the common case costs a count
            if self._plain_tail is None:  # the first plain chunk after a quoted one (which found its own
                # blank lines): what precedes stands as b"x" (a record in progress) or b"x\n" (a record end)
                self._plain_tail = b"x" if self.rec_state == 2 else b"x\n"
            self._scan_plain(chunk)
            self._plain_tail = chunk[-_TAIL:] if len(chunk) >= _TAIL else (self._plain_tail + chunk)[-_TAIL:]
        else:
            self._scan_quoted(chunk)
            self._plain_tail = None
        self.prev = chunk[-1]

    def _scan_plain(self, chunk: bytes) -> None:
        """No quote: every line end ends a record of one line. Blank lines are not looked for here
        (that would cost a second search of every chunk): one in the middle of the file makes the
        record counts differ, which sends the file line by line; the common trailing blank lines
        are taken back at the end (:meth:`_finish`)."""
        n = chunk.count(b"\n")
        if not n:
            self.rec_state = 1 if self.rec_state == 0 and chunk == b"\r" else 2
            return
        lines = np.arange(self.line, self.line + n, dtype=np.int64)
        lines[0] = self.rec_line  # the record in progress may have started on an earlier line
        self._emit(lines)
        self.line += n
        self.rec_line = self.line
        tail = chunk[chunk.rfind(b"\n") + 1:]
        self.rec_state = 0 if not tail else 1 if tail == b"\r" else 2

    def _scan_quoted(self, chunk: bytes) -> None:
        a = np.frombuffer(chunk, dtype=np.uint8)
        nl = np.flatnonzero(a == _NL)
        qp = np.flatnonzero(a == self._q)
        base = 1 if self.in_quotes else 0
        if len(qp):
            self._check_quotes(a, nl, qp, base)
        # A line end is a record end when an even number of quotes precede it.
        before = np.searchsorted(qp, nl) + base
        term_idx = np.flatnonzero(before % 2 == 0)  # indices into nl
        term = nl[term_idx]
        if len(term):
            # Record i ends at term[i]; record 0 is the one in progress, the others start after term[i-1].
            starts = np.empty(len(term), dtype=np.int64)
            starts[0] = -1
            starts[1:] = term[:-1] + 1
            lengths = term - starts
            blank = (lengths == 0) | ((lengths == 1) & (a[np.maximum(starts, 0)] == _CR))
            t0 = int(term[0])
            blank[0] = (self.rec_state == 0 and (t0 == 0 or (t0 == 1 and a[0] == _CR))) or \
                       (self.rec_state == 1 and t0 == 0)
            lines = np.empty(len(term), dtype=np.int64)
            lines[0] = self.rec_line
            lines[1:] = self.line + term_idx[:-1] + 1
            self._emit(lines[~blank])
            self.rec_line = self.line + int(term_idx[-1]) + 1
            tail = chunk[int(term[-1]) + 1:]
            self.rec_state = 0 if not tail else 1 if tail == b"\r" else 2
        elif chunk:
            self.rec_state = 1 if self.rec_state == 0 and chunk == b"\r" else 2
        self.line += len(nl)
        self.in_quotes = (base + len(qp)) % 2 == 1

    def _line_at(self, nl: np.ndarray, pos: int) -> int:
        return self.line + int(np.searchsorted(nl, pos))

    def _check_quotes(self, a: np.ndarray, nl: np.ndarray, qp: np.ndarray, base: int) -> None:
        """RFC 4180: a quote outside a field opens one only at its start; inside, it is doubled or
        closes the field, which must then end."""
        parity = (np.arange(len(qp)) + base) % 2
        opening, closing = qp[parity == 0], qp[parity == 1]
        if len(opening):
            prev = np.where(opening > 0, a[np.maximum(opening - 1, 0)], self.prev)
            bad = opening[(prev != self._d) & (prev != _NL) & (prev != self._q)]
            if len(bad):
                self._flag(self._line_at(nl, int(bad[0])), "a quote inside an unquoted field")
        if len(closing):
            n = len(a)  # bytes widened so that -1 (past the chunk's end) stays -1, not 255
            nxt = np.where(closing + 1 < n, a[np.minimum(closing + 1, n - 1)].astype(np.int16), -1)
            after = np.where(closing + 2 < n, a[np.minimum(closing + 2, n - 1)].astype(np.int16), -1)
            ok = (nxt == self._q) | (nxt == self._d) | (nxt == _NL) | ((nxt == _CR) & (after == _NL))
            pending = (nxt == -1) | ((nxt == _CR) & (after == -1))
            bad = closing[~ok & ~pending]
            if len(bad):
                self._flag(self._line_at(nl, int(bad[0])), "text after the closing quote of a field")
            if pending.any():
                last = int(closing[pending][-1])
                self._pending = (self._line_at(nl, last), 1 if nxt[pending][-1] == -1 else 2)

    def _resolve_pending(self, chunk: bytes) -> None:
        line, kind = self._pending  # type: ignore[misc]
        self._pending = None
        b0 = chunk[0]
        if kind == 1:  # the closing quote was the last byte: what follows it?
            if b0 in (self._q, self._d, _NL) or (b0 == _CR and len(chunk) > 1 and chunk[1] == _NL):
                return
            if chunk == b"\r":  # a line end, if the next byte is "\n"
                self._pending = (line, 2)
                return
        elif b0 == _NL:  # the quote was followed by "\r" at the chunk's end: a line end?
            return
        self._flag(line, "text after the closing quote of a field")

    def _finish(self) -> None:
        self.eof = True
        self._pending = None  # a quote closing the file's last field is fine
        if self._lead:  # a file shorter than a BOM, starting as one
            lead, self._lead = self._lead, None
            self._scan(lead)
        if self.in_quotes:
            self._flag(self.rec_line, f"a quoted field opened on line {self.rec_line} is never closed")
            return
        if self.rec_state == 2:  # a last record without a final line end
            self._emit(np.array([self.rec_line], dtype=np.int64))
        elif self._plain_tail is not None:
            # Plain chunks counted every line end as a record: blank lines at the very end were not.
            content = self._plain_tail.rstrip(b"\r\n")
            blanks = self._plain_tail[len(content):].count(b"\n") - 1
            if content and blanks > 0:
                self._retract(blanks)

    def _retract(self, n: int) -> None:
        with self._lock:
            n = min(n, self.records - self.taken)
            self.records -= n
            while n:
                last = self._lines[-1]
                keep = max(len(last) - n, 0)
                n -= len(last) - keep
                if keep:
                    self._lines[-1] = last[:keep]
                else:
                    self._lines.pop()


# ----------------------------------------------------------------------------------------------
# The header


def read_header(head: bytes, opts: CsvOptions, source_file: str, dataset: str) -> list[str]:
    if not head:
        raise FileRejected(source_file, dataset, "the file is empty (0 bytes)")
    end = head.find(b"\n")
    if end < 0 and len(head) >= HEADER_LIMIT:
        raise FileRejected(source_file, dataset, f"no end of header line in the first {HEADER_LIMIT} bytes")
    line = head if end < 0 else head[:end]
    try:
        text = line.decode(decoder_name(opts))
    except UnicodeDecodeError as e:
        raise FileRejected(
            source_file, dataset, f"line 1 (header): bytes not valid {opts.encoding} at byte {e.start}"
        ) from None
    text = text.removesuffix("\r")
    if "\r" in text:
        raise FileRejected(source_file, dataset, "line 1 (header) holds a bare carriage return: the file seems to "
                           "end its lines with CR alone (classic Mac); deliver it with LF or CRLF line ends")
    if not text.strip():
        raise FileRejected(source_file, dataset, "line 1 (header) is blank")
    try:
        return next(csv.reader([text], delimiter=opts.delimiter, quotechar=opts.quote_char, strict=True))
    except csv.Error as e:
        raise FileRejected(source_file, dataset, f"line 1 (header): malformed quoting ({e})") from None


# ----------------------------------------------------------------------------------------------
# The exact fallback


class _Window:
    """The physical lines of a stream (ending with their own line end), with look-ahead."""

    def __init__(self, stream: BinaryIO):
        self._it = iter(io.BufferedReader(stream, buffer_size=1 << 20))  # type: ignore[arg-type]
        self._ahead: deque[bytes] = deque()
        self.number = 1  # line number of get(0)

    def get(self, k: int) -> bytes | None:
        while len(self._ahead) <= k:
            nxt = next(self._it, None)
            if nxt is None:
                return None
            self._ahead.append(nxt)
        return self._ahead[k]

    def drop(self, k: int) -> None:
        for _ in range(k):
            self._ahead.popleft()
        self.number += k


class _TooLong(Exception):
    pass


class _BadContinuation(Exception):
    def __init__(self, line: int):
        self.line = line


QuarantineLine = Callable[[int, str, str, str], None]  # (line, rule, error, raw text)


def line_by_line(stream: BinaryIO, opts: CsvOptions, n_fields: int, clean_out: BinaryIO,
                 quarantine: QuarantineLine) -> np.ndarray:
    """Copy every well-formed record to ``clean_out`` (UTF-8, the header first) and quarantine
    each physical line where a record cannot be read; returns the start line of every copied
    record.

    A record is read as RFC 4180 reads it: it may continue over several lines while a quoted
    field is open. When its quoting is broken (text after a closing quote, a quote never closed,
    bytes invalid in the encoding), only its first line is quarantined and reading starts again on
    the next line, so one stray quote never costs the lines after it. A well-formed record with the
    wrong number of fields is quarantined whole (all its lines, as one record)."""
    window = _Window(stream)
    numbers: list[int] = []
    q, d = opts.quote_char, opts.delimiter

    first_encoding = decoder_name(opts)  # strips a BOM, on the first line only

    while (first := window.get(0)) is not None:
        no = window.number
        try:
            text = first.decode(first_encoding if no == 1 else opts.encoding)
        except UnicodeDecodeError as e:
            if no == 1:
                raise  # read_header has refused such a header already
            body = first.rstrip(b"\r\n")
            quarantine(no, "encoding", f"bytes {body[e.start:e.end]!r} at column {e.start + 1} are not valid "
                                       f"{opts.encoding}", body.decode(opts.encoding, errors="backslashreplace"))
            window.drop(1)
            continue
        body = text.removesuffix("\n").removesuffix("\r")
        if no == 1:
            clean_out.write(body.encode("utf-8") + b"\n")
            window.drop(1)
            continue
        if not body:
            window.drop(1)  # a blank line is no record
            continue
        if q not in body and "\r" not in body:
            fields = body.count(d) + 1
            if fields == n_fields:
                clean_out.write(body.encode("utf-8") + b"\n")
                numbers.append(no)
            else:
                quarantine(no, "structure", f"expected {n_fields} fields, found {fields}", body)
            window.drop(1)
            continue
        consumed = 0
        size = 0

        def feed(text: str = text, no: int = no) -> Iterator[str]:
            nonlocal consumed, size
            k = 0
            while (raw := window.get(k)) is not None:
                size += len(raw)
                if size > MAX_RECORD_BYTES:
                    raise _TooLong
                try:
                    piece = text if k == 0 else raw.decode(opts.encoding)
                except UnicodeDecodeError:
                    raise _BadContinuation(no + k) from None
                consumed = k + 1
                yield piece
                k += 1

        problem = None
        record: list[str] = []
        try:
            record = next(csv.reader(feed(), delimiter=d, quotechar=q, strict=True), [])
        except csv.Error as e:
            problem = f"malformed quoting ({e})"
        except _TooLong:
            problem = f"a quoted field runs on for more than {MAX_RECORD_BYTES >> 20} MiB (a quote never closed?)"
        except _BadContinuation as e:
            problem = (f"the quoted field opened here continues onto line {e.line}, which holds bytes not valid "
                       f"{opts.encoding}")
        if problem is not None:
            # The quoting itself is broken: only this line is known to be bad; the next ones are
            # read again on their own.
            quarantine(no, "structure", problem, body)
            window.drop(1)
            continue
        pieces = [text] + [window.get(k).decode(opts.encoding) for k in range(1, consumed)]  # type: ignore[union-attr]
        whole = "".join(pieces).removesuffix("\n").removesuffix("\r")
        if len(record) != n_fields:
            # A well-formed record (over several lines, if a quoted field holds line breaks) with
            # the wrong number of fields is still one record: quarantined whole, never in pieces.
            span = f" (a record over lines {no}-{no + consumed - 1})" if consumed > 1 else ""
            quarantine(no, "structure", f"expected {n_fields} fields, found {len(record)}{span}", whole)
        else:
            clean_out.write(whole.encode("utf-8") + b"\n")
            numbers.append(no)
        window.drop(consumed)
    return np.asarray(numbers, dtype=np.int64)
