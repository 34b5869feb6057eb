"""mesh.manifests.bookinfo: schema-valid objects, and names, labels and accounts exactly as DESIGN.md says."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from bookinfo import config as app_config
from mesh.manifests import bookinfo

K8S_VERSION = "1.30"
WORKLOAD_NAMES = ["ui-v1", "gw-v1", "books-v1", "books-v2", "ratings-v1", "ratings-v2"]
APP_NAMES = ["ui", "gw", "books", "ratings"]


def _label(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("obj", bookinfo.all_objects(), ids=_label)
def test_every_object_validates_strictly(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_all_objects_in_apply_order() -> None:
    kinds = [obj["kind"] for obj in bookinfo.all_objects()]
    assert kinds == ["Namespace"] + ["ServiceAccount"] * 4 + ["Service"] * 4 + ["Deployment"] * 6
    namespaced = [obj for obj in bookinfo.all_objects() if obj["kind"] != "Namespace"]
    assert {obj["metadata"]["namespace"] for obj in namespaced} == {"bookinfo"}
    assert bookinfo.namespace()["metadata"]["name"] == "bookinfo"


def test_workload_names_labels_and_accounts() -> None:
    deployments = bookinfo.deployments()
    assert [d["metadata"]["name"] for d in deployments] == WORKLOAD_NAMES
    for deployment in deployments:
        app, version = deployment["metadata"]["name"].split("-")
        expected = {"app": app, "version": version}
        assert deployment["metadata"]["labels"] == expected
        assert deployment["spec"]["selector"]["matchLabels"] == expected
        assert deployment["spec"]["template"]["metadata"]["labels"] == expected
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == app
        container = pod["containers"][0]
        assert container["name"] == "app"
        assert container["command"] == ["python", "-m", "bookinfo", "--app", app, "--version", version]
        assert container["ports"] == [{"name": "http", "containerPort": 9080, "protocol": "TCP"}]
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
        assert pod["securityContext"]["runAsNonRoot"] is True
    assert [sa["metadata"]["name"] for sa in bookinfo.service_accounts()] == APP_NAMES


def test_services_select_by_app_only() -> None:
    services = bookinfo.services()
    assert [s["metadata"]["name"] for s in services] == APP_NAMES
    for service in services:
        name = service["metadata"]["name"]
        assert service["spec"]["selector"] == {"app": name}
        assert service["spec"]["ports"] == [
            {"name": "http", "port": 9080, "targetPort": 9080, "protocol": "TCP"}
        ]


def _env(deployment: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.mark.parametrize("deployment", bookinfo.deployments(), ids=lambda d: d["metadata"]["name"])
def test_env_matches_what_the_app_reads(deployment: dict) -> None:
    env = _env(deployment)
    app = deployment["metadata"]["labels"]["app"]
    assert {k: env[k] for k in ("PORT", "CHAOS_PORT", "HOST")} == {
        "PORT": "9080",
        "CHAOS_PORT": "9081",
        "HOST": "0.0.0.0",
    }
    # the URL variable is the one bookinfo.config reads for this app, pointing at the callee's Service
    settings = app_config.from_args(["--app", app], env=env)
    entry = app_config.CALL_TABLE.get(app)
    if entry is None:
        assert settings.callee is None and len(env) == 3
    else:
        service, variable, _, _ = entry
        assert env[variable] == f"http://{service}:9080"
        assert settings.callee is not None and settings.callee.url == f"http://{service}:9080"


def test_image_is_a_parameter_and_results_are_fresh() -> None:
    deployments = bookinfo.deployments(image="registry.local/bookinfo:dev")
    assert {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in deployments} == {
        "registry.local/bookinfo:dev"
    }
    first = bookinfo.all_objects()
    snapshot = copy.deepcopy(first)
    first[0]["metadata"]["name"] = "mutated"
    first[-1]["spec"]["template"]["metadata"]["labels"]["x"] = "y"
    assert bookinfo.all_objects() == snapshot
