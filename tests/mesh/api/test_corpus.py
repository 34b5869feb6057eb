"""Istio's own configuration (../shared/istio-corpus): every valid networking document loads, every
invalid one is refused with an error that says what Istio's `_err` says."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mesh.api import ConfigError, dump, load_document, load_text
from tests.mesh.api.conftest import CORPUS, SECURITY_KINDS, corpus_documents

SECURITY_SKIP = "security kinds: issue 4"
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
    if document.get("kind") in SECURITY_KINDS:
        pytest.skip(SECURITY_SKIP)
    resource = load_document(document, name)
    assert resource.kind == document["kind"]
    assert resource.metadata.name == document["metadata"]["name"]
    assert load_document(dump(resource)) == resource  # dump is loss-free for real Istio YAML


@pytest.mark.parametrize("path", _files())
def test_valid_file_loads_as_text(path) -> None:
    """Whole files, so the multi-document quirks (trailing `---`, no final newline) are exercised."""
    text = path.read_text(encoding="utf-8")
    kinds = [d.get("kind") for name, _, d in corpus_documents("valid") if name == path.name]
    if any(k in SECURITY_KINDS for k in kinds):
        with pytest.raises(ConfigError, match="is not supported yet"):
            load_text(text, path.name)
        pytest.skip(SECURITY_SKIP)
    resources = load_text(text, path.name)
    assert [r.kind for r in resources] == kinds


def _expected(err: str) -> list[str]:
    """What our error must contain: Istio's field path plus the kind of problem, or its own words."""
    m = re.fullmatch(r"([\w.\[\]]+): (Required value|Invalid value)", err)
    if m:
        return [m.group(1), {"Required value": "required", "Invalid value": "invalid value"}[m.group(2)]]
    return [err.lower()]


@pytest.mark.parametrize(("name", "index", "document"), _params("invalid"))
def test_invalid_document_is_refused_for_istios_reason(name: str, index: int, document: dict) -> None:
    if document.get("kind") in SECURITY_KINDS:
        pytest.skip(SECURITY_SKIP)
    document = dict(document)
    err = document.pop("_err")
    with pytest.raises(ConfigError) as info:
        load_document(document, name)
    text = str(info.value)
    for fragment in _expected(err):
        assert fragment in text or fragment in text.lower(), f"{fragment!r} not in {text!r}"
    assert info.value.file == name


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"Istio corpus not found at {CORPUS}")
def test_corpus_counts_match_its_readme() -> None:
    def count(folder: str) -> int:
        return sum(1 for _, _, d in corpus_documents(folder) if d.get("kind") not in SECURITY_KINDS)

    assert len(list((CORPUS / "valid").glob("*.yaml"))) == 73
    assert count("valid") == 18 + 47 + 30 + 24
    assert count("invalid") == 3 + 12
