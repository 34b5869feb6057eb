"""Istio's BASE path normalization, applied before access control."""

from __future__ import annotations

import pytest

from mesh.proxy import normalization


@pytest.mark.parametrize(("raw", "normalized"), [
    ("/books", "/books"),
    ("/books?x=/../y", "/books?x=/../y"),
    ("/public/./data/abc/../xyz", "/public/data/xyz"),
    ("/a/../../b", "/b"),
    ("/a/..", "/"),
    ("/a/.", "/a/"),
    ("/%61%62%63/%2e%2e/admin", "/admin"),
    ("/some%2fdata", "/some%2fdata"),  # %2F stays encoded under BASE
    ("/some\\data", "/some/data"),
    ("/a//b", "/a//b"),  # slashes are merged only under MERGE_SLASHES
    ("/%7euser/%5F", "/~user/_"),
    ("/a%20b", "/a%20b"),
])
def test_paths_are_normalized_as_istio_base(raw, normalized):
    assert normalization.normalize_path(raw) == normalized


def test_a_nul_escape_is_refused():
    with pytest.raises(normalization.PathRejected):
        normalization.normalize_path("/a%00b")
