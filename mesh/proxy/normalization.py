"""Request path normalization before access control: Istio's default option, BASE (Envoy's
`normalize_path`), so that `/public/../admin` cannot slip past a policy on `/admin`.

`mesh.proxy.access` normalizes the path of every request it checks; the normalized path is what
`mesh.proxy.authz` matches and also what goes upstream (as in Istio, the policy and the app see one path).
"""

from __future__ import annotations

import re

# Percent-escapes of unreserved characters (RFC 3986 2.3: ALPHA DIGIT - . _ ~): decoded by BASE.
_UNRESERVED_ESCAPE = re.compile(r"%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])")


class PathRejected(ValueError):
    """A path Istio refuses before any policy runs (a NUL byte, `%00`): answered 400."""


def normalize_path(path: str) -> str:
    """Percent-encoded unreserved characters decoded (once), `\\` turned into `/`, `.` and `..` segments
    resolved (RFC 3986 5.2.4). Slashes are not merged and `%2F` stays encoded: that is MERGE_SLASHES and
    DECODE_AND_MERGE_SLASHES, not the default. The query, when present, is kept as it is."""
    cut = path.find("?")
    uri, query = (path, "") if cut < 0 else (path[:cut], path[cut:])
    if "%" not in uri and "\\" not in uri and "/." not in uri:
        return path
    if "%00" in uri:
        raise PathRejected(path)
    uri = _UNRESERVED_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), uri).replace("\\", "/")
    if "/." in uri:
        uri = _remove_dot_segments(uri)
    return uri + query


def _remove_dot_segments(uri: str) -> str:
    out: list[str] = []
    segments = uri.split("/")
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == ".":
            if index == last:
                out.append("")  # "/a/." → "/a/"
        elif segment == "..":
            if len(out) > 1:
                out.pop()
            if index == last:
                out.append("")
        else:
            out.append(segment)
    result = "/".join(out)
    return result if result.startswith("/") else "/" + result
