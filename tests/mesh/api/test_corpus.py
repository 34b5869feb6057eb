"""Istio's own configuration (../shared/istio-corpus): every valid document loads and dumps back to
itself, every invalid one is refused with an error that says what Istio's `_err` says."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from mesh.api import ConfigError, dump, load_document, load_text
from tests.mesh.api.conftest import CORPUS, corpus_documents

ABSENT = pytest.mark.skip(reason=f"Istio corpus not found at {CORPUS}")


def _params(folder: str) -> list[Any]:
    if not CORPUS.is_dir():
        return [pytest.param(None, None, None, marks=ABSENT, id="corpus-absent")]
    return [pytest.param(name, i, d, id=f"{name}#{i}") for name, i, d in corpus_documents(folder)]


def _files() -> list[Any]:
    if not CORPUS.is_dir():
        return [pytest.param(None, marks=ABSENT, id="corpus-absent")]
    return [pytest.param(p, id=p.name) for p in sorted((CORPUS / "valid").glob("*.yaml"))]


@pytest.mark.parametrize(("name", "index", "document"), _params("valid"))
def test_valid_document_loads(name: str, index: int, document: dict) -> None:
    resource = load_document(document, name)
    assert resource.kind == document["kind"]
    assert resource.metadata.name == document["metadata"]["name"]
    assert load_document(dump(resource)) == resource  # dump is loss-free for real Istio YAML


@pytest.mark.parametrize("path", _files())
def test_valid_file_loads_as_text(path) -> None:
    """Whole files, so the multi-document quirks (trailing `---`, no final newline) are exercised."""
    text = path.read_text(encoding="utf-8")
    kinds = [d.get("kind") for name, _, d in corpus_documents("valid") if name == path.name]
    resources = load_text(text, path.name)
    assert [r.kind for r in resources] == kinds


_PATH = r"([\w.\[\]]+)"
# Kubernetes' schema and CEL phrasings (Istio's CRD rejects before its webhook runs), each with the
# words Weir uses for the same kind of problem. Anything else must appear in Weir's error verbatim.
_KUBERNETES_FORMS: list[tuple[str, Callable[[re.Match[str]], list[str]]]] = [
    (rf"{_PATH}: Required value", lambda m: [m[1], "required"]),
    (rf"{_PATH}: Invalid value", lambda m: [m[1], "invalid value"]),
    (r'Unsupported value: "(.*)"', lambda m: [f"invalid value {m[1]!r}"]),  # not one of an enum
    (rf"{_PATH} in body should be at least 1 chars long", lambda m: [m[1], "must not be empty"]),
    (rf"{_PATH} in body should have at least 1 properties", lambda m: [m[1], "at least one"]),
    (rf"{_PATH} in body must be of type object", lambda m: [m[1], "invalid type"]),
    (rf"{_PATH} in body should match", lambda m: [m[1], "invalid"]),  # a pattern
    (r"type conversion error from", lambda m: ["not a number"]),  # CEL's int() of a map key
]


def _expected(err: str) -> list[str]:
    """What our error must contain: Istio's field path plus the kind of problem, or its own words."""
    for pattern, words in _KUBERNETES_FORMS:
        if m := re.fullmatch(pattern, err):
            return words(m)
    return [err.lower()]


@pytest.mark.parametrize(("name", "index", "document"), _params("invalid"))
def test_invalid_document_is_refused_for_istios_reason(name: str, index: int, document: dict) -> None:
    document = dict(document)
    err = document.pop("_err")
    with pytest.raises(ConfigError) as info:
        load_document(document, name)
    text = str(info.value)
    for fragment in _expected(err):
        assert fragment in text or fragment in text.lower(), f"{fragment!r} not in {text!r}"
    assert info.value.file == name


@pytest.mark.parametrize(
    ("err", "fragments"),
    [
        ("spec.a: Required value", ["spec.a", "required"]),
        ('Unsupported value: "BLAH"', ["invalid value 'BLAH'"]),
        ("x[0] in body should be at least 1 chars long", ["x[0]", "must not be empty"]),
        ("spec.m in body should have at least 1 properties", ["spec.m", "at least one"]),
        ("spec.l[0] in body must be of type object", ["spec.l[0]", "invalid type"]),
        ("spec.g in body should match", ["spec.g", "invalid"]),
        ("Some Own Words", ["some own words"]),
    ],
)
def test_expected_reads_kubernetes_phrasings(err: str, fragments: list[str]) -> None:
    assert _expected(err) == fragments


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"Istio corpus not found at {CORPUS}")
def test_corpus_counts_match_its_readme() -> None:
    def count(folder: str) -> Counter[str]:
        return Counter(d.get("kind") for _, _, d in corpus_documents(folder))

    assert len(list((CORPUS / "valid").glob("*.yaml"))) == 73
    assert count("valid") == {
        "Gateway": 18,
        "VirtualService": 47,
        "DestinationRule": 30,
        "ServiceEntry": 24,
        "PeerAuthentication": 7,
        "AuthorizationPolicy": 21,
        "RequestAuthentication": 1,
    }
    assert count("invalid") == {
        "DestinationRule": 3,
        "ServiceEntry": 12,
        "PeerAuthentication": 6,
        "AuthorizationPolicy": 2,
        "RequestAuthentication": 19,
    }
