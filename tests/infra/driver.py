"""Runs the Pulumi program (`__main__.py`) under `pulumi.runtime.set_mocks` and prints what it registered.

Usage: `python tests/infra/driver.py STACK [KEY=JSON ...]` from the repository root. The stack file's config
is given to the program as `pulumi up` would (strings as they are, everything else as JSON); each KEY=JSON
overrides one key (`weir:autopilot=true`), `KEY=` removes it. Prints one JSON document:
`{"resources": [{urn, type, name, custom, parent, provider, dependencies, inputs}], "outputs": {name:
{"value", "secret"}}, "error": null | "..."}`. One process per run: Pulumi's resource graph is global.

The mocks fabricate what the cloud would compute: the cluster's endpoint and CA certificate, service
account e-mails, and the LoadBalancer Service's status.
"""

from __future__ import annotations

import base64
import json
import runpy
import sys
import traceback
from pathlib import Path

import pulumi
import yaml
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT = "203.0.113.10"
CA_CERT = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nmock\n-----END CERTIFICATE-----\n").decode()
INGRESS_IP = "198.51.100.7"


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ == "gcp:container/cluster:Cluster":
            outputs.update(name=args.name, endpoint=ENDPOINT, masterAuth={"clusterCaCertificate": CA_CERT})
        elif args.typ == "gcp:serviceaccount/account:Account":
            outputs["email"] = f"{args.inputs['accountId']}@mock-project.iam.gserviceaccount.com"
        elif args.typ in ("gcp:compute/router:Router", "gcp:compute/network:Network"):
            outputs.setdefault("name", args.name)
        elif args.typ == "kubernetes:core/v1:Service" and args.inputs.get("spec", {}).get("type") == "LoadBalancer":
            outputs["status"] = {"loadBalancer": {"ingress": [{"ip": INGRESS_IP}]}}
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}, None


class RecordingMonitor(MockMonitor):
    """The mock monitor, also keeping each registration's parent, provider and dependencies."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[dict] = []

    def RegisterResource(self, request):  # noqa: N802 (the gRPC method's name)
        response = super().RegisterResource(request)
        self.registrations.append({
            "urn": response.urn, "type": request.type, "name": request.name, "custom": request.custom,
            "parent": request.parent, "provider": request.provider.split("::id")[0].rsplit("::", 1)[0]
            if request.provider else "", "dependencies": sorted(request.dependencies),
        })
        return response


def stack_config(stack: str, overrides: list[str]) -> dict[str, str]:
    config = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    for item in overrides:
        key, _, value = item.partition("=")
        if value:
            config[key] = json.loads(value)
        else:
            config.pop(key, None)
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def run(stack: str, overrides: list[str]) -> dict:
    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="weir", stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(stack_config(stack, overrides))
    error = None
    try:
        _sync_await(run_pulumi_func(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")))
    except Exception as exc:  # reported, not raised: the test asserts on the message
        error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    inputs = {urn: reg.state for urn, reg in monitor.resources.items()}
    root = pulumi.runtime.settings.get_root_resource()
    outputs = {}
    for key, value in (getattr(root, "outputs", None) or {}).items():
        out = pulumi.Output.from_input(value)
        outputs[key] = {"value": _sync_await(out.future()), "secret": _sync_await(out.is_secret())}
    resources = [{**reg, "inputs": inputs.get(reg["urn"], {})} for reg in monitor.registrations]
    return {"resources": resources, "outputs": outputs, "error": error}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(run(sys.argv[1], sys.argv[2:]), default=str, sort_keys=True))
