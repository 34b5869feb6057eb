"""Upstream response heads: what the proxy reads from their raw bytes, and the head it writes to the client.

httptools gives no raw view of a head and no call per header is made (`UpstreamConnection` sets no
`on_header`), so the head is handled as bytes: hop-by-hop lines dropped by one regex pass, framing and
Content-Length found by search. An upstream's heads repeat byte for byte (nginx's change once a second, with
`Date`; an app's with its body length), so two memos keyed by the head's exact bytes keep what was found:

- `scan_response_head`: the head's lines less the hop-by-hop ones (ready to send, each ending in CRLF), whether a Content-Length remains, whether
  it frames its body. Its three regex passes were a seventh of a sidecar's instructions per request.
- `known_response`: what httptools said of a head it parsed (status, keep-alive, Content-Length), noted by
  `note_parsed` for a plain answer (2xx but 204, Content-Length framing) seen a second time. A later read
  that is exactly such a head and its whole body is then answered without the parser: llhttp, strict (no
  leniency flag is set), clears its state at each message boundary, so the same bytes there always parse
  the same, and the parser is left at that boundary, as a full message would leave it. Not after a 1xx in
  the same exchange: one with `Connection: close` leaves llhttp refusing every further byte. Worked example, one sidecar proxying nginx's 1 KiB answers: a read is `HTTP/1.1 200 OK ...
  Content-Length: 1024\\r\\n\\r\\n` and 1,024 bytes; from the second such read on, the head is looked up
  (one hash of its ~200 bytes) instead of four parser callbacks, and a request costs 6 % fewer instructions.
  Anything else (a head split over reads, a body in parts, bytes after the body, HEAD, a 1xx, chunked, a
  retriable status) takes the parser.
- `downstream_response_head`: the client's head itself, when it is the plain one (the upstream's lines less
  the hop-by-hop ones, a Content-Length, kept alive, no header operations and nothing added).

The memos are bounded: heads up to MAX_SCANNED_HEAD_BYTES (MAX_PARSED_HEAD_BYTES), MAX_SCANNED_HEADS
(MAX_PARSED_HEADS) of them, cleared when full.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mesh.proxy import replies
from mesh.proxy.headers import CHUNKED, CRLF, SKIP_DOWNSTREAM

if TYPE_CHECKING:
    from mesh.proxy.exchange import Exchange

# A whole hop-by-hop (or peer metadata) header line in a raw head, CRLF first: removed in one pass.
_HOP_LINE = re.compile(
    rb"\r\n(?:" + b"|".join(re.escape(n) for n in sorted(SKIP_DOWNSTREAM)) + rb")[ \t]*:[^\r\n]*", re.IGNORECASE)
_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:", re.IGNORECASE)
# Does a raw response head carry its own framing (Content-Length or Transfer-Encoding)?
FRAMING_LINE = re.compile(rb"\r\n(?:content-length|transfer-encoding)[ \t]*:", re.IGNORECASE)
# A Content-Length line whose value is digits only, and a Transfer-Encoding line: `note_parsed` remembers a
# head with exactly one of the first and none of the second (llhttp refuses the other heads before they
# complete; checked again so that the memo's answer never rests on that alone).
_LENGTH_VALUE = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d+)[ \t]*(?=\r\n|$)", re.IGNORECASE)
_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding[ \t]*:", re.IGNORECASE)
CLOSE = b"connection: close\r\n"
HEAD_END = b"\r\n\r\n"

# The scan memo: heads up to this size, this many at most (cleared when full): about 512 KiB.
MAX_SCANNED_HEADS = 256
MAX_SCANNED_HEAD_BYTES = 1024
# The parse memo: the same bounds (its values are three small fields): about 256 KiB.
MAX_PARSED_HEADS = 256
MAX_PARSED_HEAD_BYTES = 1024
# `known_response` splits a read up to this size in one call (copying its body even when the head is not a
# known one); a larger read is searched first.
MAX_PARTITIONED_READ = 4096
_scanned: dict[bytes, tuple[bytes, bool, bool]] = {}
_plain_heads: dict[bytes, bytes] = {}  # upstream head → the client's, for the plain answer
_parsed: dict[bytes, tuple[int, bool, int]] = {}


def scan_response_head(raw: bytes) -> tuple[bytes, bool, bool]:
    """(the header lines after the status line with the hop-by-hop ones dropped, each ending in CRLF, as the
    client's head takes them; whether a Content-Length line remains; whether the head frames its body:
    Content-Length or Transfer-Encoding). A pure function of the head's bytes, memoized."""
    scanned = _scanned.get(raw)
    if scanned is None:
        first = raw.find(CRLF)
        rest = _HOP_LINE.sub(b"", raw[first:]) if first >= 0 else b""
        scanned = (rest[2:] + CRLF if rest else b"", _LENGTH.search(rest) is not None,
                   FRAMING_LINE.search(raw) is not None)
        if len(raw) <= MAX_SCANNED_HEAD_BYTES:
            if len(_scanned) >= MAX_SCANNED_HEADS:
                _scanned.clear()
            _scanned[raw] = scanned
    return scanned


def frames_body(raw: bytes) -> bool:
    """Does a raw response head carry its own framing (Content-Length or Transfer-Encoding)? From the memo
    when the head can be in it; a larger head takes the one search this needs."""
    if len(raw) <= MAX_SCANNED_HEAD_BYTES:
        return scan_response_head(raw)[2]
    return FRAMING_LINE.search(raw) is not None


def note_parsed(raw: bytes, status: int, keep_alive: bool) -> None:
    """httptools parsed `raw` (status line and header lines, no final CRLF) as `status` and `keep_alive`:
    remembered when the answer is plain and the head was seen before (it is in the scan memo), so that an
    upstream whose every head differs (a request id echoed) costs one lookup, not a memo churned per answer.
    Call it before `frames_body`, which puts the head in the scan memo."""
    if (200 <= status < 300 and status != 204 and len(raw) <= MAX_PARSED_HEAD_BYTES and raw in _scanned
            and raw not in _parsed):
        lengths = _LENGTH_VALUE.findall(raw)
        if len(lengths) == 1 and _TRANSFER_ENCODING.search(raw) is None:
            if len(_parsed) >= MAX_PARSED_HEADS:
                _parsed.clear()
            _parsed[raw] = (status, keep_alive, int(lengths[0]))


def known_response(data: bytes) -> tuple[bytes, int, bool, bytes] | None:
    """(the head, status, keep-alive, the body) when `data`, read at a message boundary, is exactly a head
    `note_parsed` remembered and its whole body; else None. The head is the object looked up here: its hash
    is kept, so the next memo (`scan_response_head`) does not hash its ~200 bytes again. A small read is
    split by `partition`, one call whose argument CPython does not parse as a tuple, as `find`'s are (~350
    instructions); a larger one is searched only as far as a remembered head can reach, so that a miss (a
    body in parts, a head not seen yet) copies nothing."""
    if len(data) <= MAX_PARTITIONED_READ:
        head, found, body = data.partition(HEAD_END)
        if not found:
            return None
    else:
        end = data.find(HEAD_END, 0, MAX_PARSED_HEAD_BYTES + 4)
        if end < 0:
            return None
        head = data[:end]
        body = None
    if not head or len(head) > MAX_PARSED_HEAD_BYTES:
        return None
    known = _parsed.get(head)
    if known is None:
        return None
    if body is None:
        if len(data) != len(head) + 4 + known[2]:
            return None
        body = data[len(head) + 4:]
    elif len(body) != known[2]:
        return None
    return head, known[0], known[1], body


def _lines(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Header lines of a raw head (status line excluded) as (lower-case name, value)."""
    out = []
    for line in raw.split(CRLF)[1:]:
        name, _, value = line.partition(b":")
        out.append((name.strip().lower(), value.strip()))
    return out


def downstream_response_head(exchange: Exchange, status: int, raw: bytes) -> bytes:
    """The client's response head from the upstream's raw head (status line + header lines, no final CRLF).

    Fast path, no Python per header: hop-by-hop lines dropped by `scan_response_head`, the rest copied as
    they came. With Istio response header operations, lines are split and filtered by name.
    """
    plan = exchange.response_ops
    # The plain answer's head depends on the upstream's bytes alone (the status is in them).
    plain = plan is None and exchange.keep_alive and not exchange.extra_response_headers and not exchange.is_head
    if plain:
        head = _plain_heads.get(raw)
        if head is not None:
            return head
    if plan is None:
        lines, has_length, _ = scan_response_head(raw)
        parts = [replies.status_line(status), lines]
    else:
        parts = [replies.status_line(status)]
        has_length = False
        for name, value in _lines(raw):
            if name in SKIP_DOWNSTREAM or name in plan.dropped:
                continue
            if name == b"content-length":
                has_length = True
            parts.append(name + b": " + value + CRLF)
        parts.append(plan.lines)
    append = parts.append
    bodyless = status < 200 or status == 204 or status == 304 or exchange.is_head
    if not has_length and not bodyless:
        if exchange.conn.http11:
            exchange.chunked_response = True
            append(CHUNKED)
        else:
            exchange.keep_alive = False
    if exchange.extra_response_headers:
        append(exchange.extra_response_headers)
    if not exchange.keep_alive:
        append(CLOSE)
    append(CRLF)
    head = b"".join(parts)
    if plain and has_length and len(raw) <= MAX_SCANNED_HEAD_BYTES:
        if len(_plain_heads) >= MAX_SCANNED_HEADS:
            _plain_heads.clear()
        _plain_heads[raw] = head
    return head
