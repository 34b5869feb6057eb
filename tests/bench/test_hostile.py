"""bench.hostile's table helpers and catalogue, without processes (the run itself is `python -m bench.hostile`)."""

from __future__ import annotations

from bench import hostile, hostile_probe
from bench.hostile_vectors import BY_NAME, FORWARDED, VECTORS


def test_vector_names_are_unique_and_groups_are_all_rendered():
    assert len(BY_NAME) == len(VECTORS)
    assert {v.group for v in VECTORS} == set(hostile.GROUPS)
    assert all(v.expect == FORWARDED or 400 <= v.expect < 600 for v in VECTORS)


def test_escape_shows_control_bytes_and_elides_long_requests():
    assert hostile.escape(b"GET /\r\nX: \x00|`\r\n") == "`GET /\\r\\nX: \\x00\\|\\`\\r\\n`"
    long = hostile.escape(b"a" * 1000)
    assert long.endswith("(1000 bytes)`") and len(long) < 200


def test_a_result_says_what_the_client_got_and_what_reached_the_upstream():
    refused = hostile_probe.Result([400], closed=True, received=80)
    assert refused.describe() == "400, closed → nothing"
    forwarded = hostile_probe.Result([100, 200], received=60,
                                     upstream=[hostile_probe.Forwarded("POST /", "CL 3")])
    assert forwarded.describe() == "100 + 200 → `POST /` CL 3"
    retried = hostile_probe.Result([502], received=60, upstream=[hostile_probe.Forwarded("junk", "?")] * 2)
    assert retried.describe() == "502 → junk (tried twice)"


def test_statuses_are_read_from_pipelined_responses():
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 400 Bad Request\r\n\r\n"
    assert hostile_probe.statuses(data) == [100, 200, 400]
