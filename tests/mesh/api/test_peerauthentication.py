"""PeerAuthentication: mTLS modes, port-level settings and Istio's rules for them."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.api import (
    ConfigError,
    PeerAuthentication,
    PeerAuthenticationMutualTLS,
    WorkloadSelector,
    dump,
    load_document,
)
from tests.mesh.api.conftest import FILE, pa, security

KEY = "PeerAuthentication/bookinfo/policy"
SELECTOR = {"matchLabels": {"app": "books"}}


def load(body: dict[str, Any]) -> PeerAuthentication:
    resource = load_document(body, FILE)
    assert isinstance(resource, PeerAuthentication)
    assert load_document(dump(resource)) == resource
    return resource


def refused(body: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_document(body, FILE)
    assert (info.value.file, info.value.resource) == (FILE, KEY)
    return info.value


@pytest.mark.parametrize("mode", ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"])
def test_every_mode_is_accepted(mode: str) -> None:
    assert load(pa(mtls={"mode": mode})).spec.mtls == PeerAuthenticationMutualTLS(mode=mode)


def test_attributes_as_built() -> None:
    spec = load(
        pa(selector=SELECTOR, mtls={"mode": "STRICT"}, portLevelMtls={8080: {"mode": "DISABLE"}, "9080": {}})
    ).spec
    assert spec.selector == WorkloadSelector(match_labels={"app": "books"})
    assert spec.mtls is not None and spec.mtls.mode == "STRICT"
    assert spec.port_level_mtls == {
        8080: PeerAuthenticationMutualTLS(mode="DISABLE"),
        9080: PeerAuthenticationMutualTLS(),
    }


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, {}),
        ({"mtls": {}}, {"mtls": {}}),
        ({"selector": {}}, {"selector": {}}),  # Istio: "weird but valid"
        ({"selector": SELECTOR, "portLevelMtls": {8090: {"mode": "STRICT"}}}, None),
    ],
)
def test_dump_keeps_what_was_written(spec: dict, expected: dict | None) -> None:
    out = dump(load(pa(**spec)))["spec"]
    if expected is None:  # map keys come back as strings, as JSON and Kubernetes write them
        expected = {"selector": SELECTOR, "portLevelMtls": {"8090": {"mode": "STRICT"}}}
    assert out == expected


def test_no_spec_means_inherit_everything() -> None:
    body = {k: v for k, v in pa().items() if k != "spec"}
    spec = load(body).spec
    assert (spec.selector, spec.mtls, spec.port_level_mtls) == (None, None, None)


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        ({"mtls": {"mode": "BLAH"}}, "spec.mtls.mode", "invalid value 'BLAH'"),
        ({"mtls": {"mode": "strict"}}, "spec.mtls.mode", "invalid value 'strict'"),
        ({"mtls": {"mode": "STRICT", "extra": 1}}, "spec.mtls.extra", "unknown field"),
        ({"selector": SELECTOR, "portLevelMtls": {"acd": {}}}, "spec.portLevelMtls[acd]", "not a number"),
        ({"selector": SELECTOR, "portLevelMtls": {"8.5": {}}}, "spec.portLevelMtls[8.5]", "not a number"),
        ({"selector": SELECTOR, "portLevelMtls": {True: {}}}, "spec.portLevelMtls[True]", "not a number"),
        ({"selector": SELECTOR, "portLevelMtls": {"0": {}}}, "spec.portLevelMtls[0]", "between 1-65535"),
        (
            {"selector": SELECTOR, "portLevelMtls": {65536: {}}},
            "spec.portLevelMtls[65536]",
            "between 1-65535",
        ),
        ({"selector": SELECTOR, "portLevelMtls": {"-80": {}}}, "spec.portLevelMtls[-80]", "between 1-65535"),
        ({"selector": SELECTOR, "portLevelMtls": {80: {}, "80": {}}}, "spec.portLevelMtls[80]", "duplicate"),
        ({"selector": SELECTOR, "portLevelMtls": {}}, "spec.portLevelMtls", "at least one element"),
        ({"selector": SELECTOR, "portLevelMtls": [80]}, "spec.portLevelMtls", "invalid type"),
        (
            {"selector": SELECTOR, "portLevelMtls": {"80": {"mode": "ON"}}},
            "spec.portLevelMtls[80].mode",
            "invalid value 'ON'",
        ),
        (
            {"portLevelMtls": {"80": {"mode": "STRICT"}}},
            "spec.portLevelMtls",
            "portLevelMtls requires selector",
        ),
        ({"selector": {}, "portLevelMtls": {"80": {}}}, "spec.portLevelMtls", "requires selector"),
        (
            {"selector": {"matchLabels": {}}, "portLevelMtls": {"80": {}}},
            "spec.portLevelMtls",
            "requires selector",
        ),
        ({"selector": {"matchLabels": {"app": "*"}}}, "spec.selector.matchLabels.app", "wildcard"),
        ({"selector": {"labels": {"app": "a"}}}, "spec.selector.labels", "unknown field"),
        ({"targetRef": {"kind": "Service", "name": "a"}}, "spec.targetRef", "unknown field"),
    ],
)
def test_refused(spec: dict, path: str, fragment: str) -> None:
    err = refused(pa(**spec))
    assert err.path == path, str(err)
    assert fragment in err.message


def test_refused_versions_and_annotations() -> None:
    assert (
        refused(security("PeerAuthentication", api_version="security.istio.io/v1alpha1")).path == "apiVersion"
    )
    err = refused(security("PeerAuthentication", annotations={"istio.io/dry-run": "true"}))
    assert err.path == "metadata.annotations.istio.io/dry-run" and "unsupported annotation" in err.message
