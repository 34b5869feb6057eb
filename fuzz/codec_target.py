"""atheris target: the proxy's HTTP/1.1 codec (mesh.proxy.downstream, upstream, exchange) on fuzzed bytes.

Input layout: byte 0 picks the side and the split count; then `n` two-byte big-endian split points; the
rest is the payload.
  byte 0 & 0x80 == 0: the payload is what a client sends on one connection, cut at the split points
                      (invariants: tests.mesh.proxy.codec_oracle.check_client_stream)
  byte 0 & 0x80 != 0: the payload is what the upstream answers to `GET /x` (HEAD when & 0x40), reset
                      afterwards when & 0x20 (invariants: check_upstream_stream)
  n = (byte 0 & 0x07) % 5
A violated invariant raises CodecViolation (an AssertionError), which libFuzzer reports as a crash.

Run: `make fuzz` (FUZZ_TIME seconds, default 300), or
     .venv/bin/python fuzz/codec_target.py fuzz/corpus/codec -max_total_time=600
`check(data)` runs one input without atheris: tests/mesh/proxy/test_codec_properties.py replays the seed
corpus through it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MAX_CUTS = 5


def decode(data: bytes) -> tuple[int, list[int], bytes]:
    """(flags, split points, payload) from a fuzzer input."""
    if not data:
        return 0, [], b""
    flags = data[0]
    count = (flags & 0x07) % MAX_CUTS
    cuts = [int.from_bytes(data[1 + 2 * i:3 + 2 * i], "big") for i in range(count)]
    return flags, cuts, data[1 + 2 * count:]


def encode(payload: bytes, cuts: tuple[int, ...] = (), flags: int = 0) -> bytes:
    """The inverse of `decode`, for writing seeds."""
    head = bytes([(flags & 0xF8) | len(cuts)])
    return head + b"".join(c.to_bytes(2, "big") for c in cuts) + payload


_LOOP: asyncio.AbstractEventLoop | None = None


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP


def check(data: bytes) -> None:
    """Run one input through the proxy and check the codec's invariants; raises on a violation."""
    from tests.mesh.proxy import codec_oracle as oracle

    flags, cuts, payload = decode(data)
    loop = _loop()
    if flags & 0x80:
        method = "HEAD" if flags & 0x40 else "GET"
        reset = bool(flags & 0x20)
        outcome = loop.run_until_complete(oracle.drive_upstream(payload, cuts, method, reset))
        oracle.check_upstream_stream(payload, method, outcome, reset)
    else:
        outcome = loop.run_until_complete(oracle.drive_client(payload, cuts))
        oracle.check_client_stream(payload, outcome)


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["mesh", "tests.mesh.proxy"]):
        import mesh.proxy.downstream  # noqa: F401
        import mesh.proxy.exchange  # noqa: F401
        import mesh.proxy.upstream  # noqa: F401
        from tests.mesh.proxy import codec_oracle  # noqa: F401
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
