"""infra.settings: the stack files load; every bad or missing key fails with a message naming it."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

import mesh.manifests.settings as manifest_settings
from infra import config_keys, settings

STACKS = ("dev", "staging", "prod")


def config(stack: str = "dev") -> dict:
    return yaml.safe_load((settings.ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


@pytest.mark.parametrize("stack", STACKS)
def test_stack_files_load(stack):
    s = settings.from_mapping(config(stack), stack)
    assert s.stack == stack and s.cluster_name == f"weir-{stack}"
    assert s.routing.endswith("@v1") and s.routing_resources
    m = s.manifests
    assert isinstance(m, manifest_settings.ManifestSettings)
    assert (m.stack, m.image, m.mtls_mode, m.admin_users) == (stack, s.image, s.mtls_mode, s.admin_users)
    assert m.routing == s.routing_resources


def test_stacks_differ_only_in_parameters():
    dev, prod = (settings.from_mapping(config(st), st) for st in ("dev", "prod"))
    assert not dev.deletion_protection and dev.node_pool.min_nodes <= 1
    assert prod.deletion_protection and prod.node_pool.min_nodes >= 3 and prod.mtls_mode == "STRICT"
    assert set(config("dev")) == set(config("staging")) == set(config("prod")), "same keys in every stack"


def test_defaults():
    raw = config()
    for key in ("weir:mtlsMode", "weir:autopilot", "weir:network", "weir:releaseChannel", "weir:security"):
        raw.pop(key, None)
    s = settings.from_mapping(raw, "dev")
    assert (s.mtls_mode, s.autopilot, s.release_channel, s.workload_cert_ttl) == ("PERMISSIVE", False, "REGULAR", "24h")
    assert s.network.master_cidr.endswith("/28")


def _set(raw: dict, path: str, value) -> dict:
    raw = copy.deepcopy(raw)
    key, _, field = path.partition(".")
    if field:
        raw[key] = {**raw[key], field: value}
    elif value is ...:
        raw.pop(key)
    else:
        raw[key] = value
    return raw


BAD = [
    ("gcp:project", ..., "gcp:project", "missing"),
    ("weir:clusterName", "Weir_Dev", "weir:clusterName", "does not match"),
    ("weir:image", ..., "weir:image", "missing"),
    ("weir:mtlsMode", "LOOSE", "weir:mtlsMode", "STRICT, PERMISSIVE, DISABLE"),
    ("weir:releaseChannel", "latest", "weir:releaseChannel", "RAPID, REGULAR, STABLE"),
    ("weir:release", "no-such@v1", "weir:release", "release no-such@v1 not found"),
    ("weir:release", "all-v1", "weir:release", "NAME@vN"),
    ("weir:releaseDigest", "sha256:" + "0" * 64, "weir:release", "but the stack pins sha256:000"),
    ("weir:releaseDigest", ..., "weir:release", "`weir:releaseDigest` must be"),
    ("weir:routing", "all-v1", "weir:release", "not both"),
    ("weir:deletionProtection", "yes", "weir:deletionProtection", "true or false"),
    ("weir:deletionProtection", ..., "weir:deletionProtection", "missing"),
    ("weir:autopilot", 1, "weir:autopilot", "true or false"),
    ("weir:nodePool.minNodes", 0, "weir:nodePool.minNodes", "[1, 100]"),
    ("weir:nodePool.maxNodes", 0, "weir:nodePool.maxNodes", "[1, 100]"),
    ("weir:nodePool.machineType", "", "weir:nodePool.machineType", "non-empty string"),
    ("weir:nodePool.diskType", "floppy", "weir:nodePool.diskType", "pd-balanced"),
    ("weir:nodePool.nodes", 3, "weir:nodePool.nodes", "unknown field"),
    ("weir:nodePool", 3, "weir:nodePool", "expected an object"),
    ("weir:network.masterCidr", "172.16.0.0/24", "weir:network.masterCidr", "/28"),
    ("weir:network.podsCidr", "10.10.0.0/16", "weir:network.podsCidr", "overlaps nodesCidr"),
    ("weir:network.servicesCidr", "10.300.0.0/20", "weir:network.servicesCidr", "not an IPv4 CIDR"),
    ("weir:authorizedNetworks", [], "weir:authorizedNetworks", "non-empty list"),
    ("weir:authorizedNetworks", [{"name": "all", "cidr": "0.0.0.0/0"}], "weir:authorizedNetworks[0].cidr",
     "public"),
    ("weir:authorizedNetworks", [{"name": "x", "cidr": "1.2.3"}], "weir:authorizedNetworks[0].cidr", "CIDR"),
    ("weir:adminUsers", ["root"], "weir:adminUsers[0]", "e-mail"),
    ("weir:security", {"workloadCertTtl": "1d"}, "weir:security.workloadCertTtl", "does not match"),
    ("weir:meshConfig", {"outboundTrafficPolicy": {"mode": "DENY"}}, "weir:meshConfig.outboundTrafficPolicy.mode",
     "ALLOW_ANY"),
    ("weir:otlpEndpoint", "otel-collector:4318", "weir:otlpEndpoint", "OTLP/HTTP collector"),
    ("weir:otlpEndpoint", "grpc://otel-collector:4317", "weir:otlpEndpoint", "http(s)://host:port"),
]


@pytest.mark.parametrize(("path", "value", "key", "says"), BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD])
def test_bad_or_missing_key_is_named(path, value, key, says):
    with pytest.raises(config_keys.SettingsError) as err:
        settings.from_mapping(_set(config(), path, value), "dev")
    assert err.value.key == key
    assert str(err.value).startswith(f"stack config {key}: ") and says in str(err.value)


def test_otlp_endpoint_reaches_the_manifests_and_is_unset_by_default():
    assert settings.from_mapping(config(), "dev").manifests.otlp_endpoint is None
    endpoint = "http://otel-collector.observability.svc:4318"
    s = settings.from_mapping({**config(), "weir:otlpEndpoint": endpoint}, "dev")
    assert s.otlp_endpoint == s.manifests.otlp_endpoint == endpoint


def test_an_unreleased_scenario_may_be_deployed_by_name():
    raw = {k: v for k, v in config("dev").items() if k not in ("weir:release", "weir:releaseDigest")}
    s = settings.from_mapping({**raw, "weir:routing": "ratings-50"}, "dev")
    assert s.routing == "ratings-50" and len(s.routing_resources) == 10
    with pytest.raises(config_keys.SettingsError, match="no stacks/routing/no-such.yaml") as err:
        settings.from_mapping({**raw, "weir:routing": "no-such"}, "dev")
    assert err.value.key == "weir:routing"


def test_load_reads_pulumi_config(monkeypatch):
    """`load()` reads the running program's config (JSON-encoded like `pulumi up` passes it)."""
    pulumi = pytest.importorskip("pulumi")
    raw = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config("prod").items()}
    pulumi.runtime.set_all_config(raw)
    monkeypatch.setattr(pulumi, "get_stack", lambda: "prod")
    try:
        assert settings.load() == settings.from_mapping(config("prod"), "prod")
    finally:
        pulumi.runtime.set_all_config({})
