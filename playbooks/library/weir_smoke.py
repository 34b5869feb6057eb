#!/usr/bin/python
"""Ansible module: Weir's smoke checks (mesh.local.smoke) against a stack's local environment or its cluster.

Run by playbooks/smoke.yml with the project's virtualenv python (`ansible_python_interpreter`), which
imports the `mesh` package. It describes the stack's pinned release (ref, digest, the rules its
`weir.dev/expect` annotation states) and, unless `run` is false or in check mode, runs `smoke.run`
and records the result in `<state dir>/smoke.json`, where promotion reads it. It never changes the
environment's configuration (chaos switches set for a scenario are reset) and never reports `changed`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: weir_smoke
short_description: Run Weir's smoke checks against a local environment and record the result
description:
  - Describes the stack's pinned routing release and the rules its weir.dev/expect annotation states.
  - Runs the baseline checks (workloads-ready, proxies-in-sync, release-in-effect, books-contract) and
    one check per stated rule, then records the result in the stack's state directory (smoke.json).
  - With O(failed_check), records a failed run naming that check instead, and runs nothing.
  - In check mode nothing is sent and nothing recorded.
options:
  stack:
    description: The stack (stacks/Pulumi.<stack>.yaml).
    type: str
    required: true
  root:
    description: The project root, the directory holding stacks/.
    type: path
    required: true
  run:
    description: Run the checks (false only describes the release, for GKE or dry runs).
    type: bool
    default: true
  scenario:
    description: Send the release's scenario traffic and judge each stated rule.
    type: bool
    default: true
  release_check:
    description: Check that the control plane runs the pinned release's digest.
    type: bool
    default: true
  platform:
    description: local (the stack's local environment) or kubernetes (a cluster, through kubectl).
    type: str
    choices: [local, kubernetes]
    default: local
  ingress_url:
    description: The cluster's ingress URL (kubernetes only).
    type: str
  kubectl:
    description: The kubectl command and its options, e.g. [kubectl, --context, gke_p_r_weir-dev] (kubernetes only).
    type: list
    elements: str
    default: [kubectl]
  record_as:
    description: >-
      Where the result is recorded, as a state directory name under the state root (default the stack's
      own, .weir/<stack>); a cluster's results go beside the local environment's, e.g. gke-dev.
    type: str
  failed_check:
    description: Record a failed smoke run naming this check (found failing by a role), run nothing.
    type: str
  failed_detail:
    description: What the failing check expected and saw.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Run the smoke checks of stack dev
  weir_smoke:
    stack: dev
    root: /src/weir
  register: smoke_run_result
"""

RETURN = r"""
release:
  description: The pinned release (NAME@vN), or the scenario of an unreleased stack.
  type: str
  returned: always
digest:
  description: The digest the environment must run.
  type: str
  returned: always
rules:
  description: The rules the release's expectation states (status, split, latency, ...).
  type: list
  returned: always
books_contract_waived:
  description: True when the release expects no 200 from /gateway/books (delay-5s).
  type: bool
  returned: always
report:
  description: The smoke report (stack, release, digest, passed, checks, probes) when run.
  type: dict
  returned: when run
checks:
  description: The report's checks by name (name, passed, detail); empty when not run.
  type: dict
  returned: always
"""



def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "stack": {"type": "str", "required": True},
            "root": {"type": "path", "required": True},
            "run": {"type": "bool", "default": True},
            "scenario": {"type": "bool", "default": True},
            "release_check": {"type": "bool", "default": True},
            "platform": {"type": "str", "default": "local", "choices": ["local", "kubernetes"]},
            "ingress_url": {"type": "str"},
            "kubectl": {"type": "list", "elements": "str", "default": ["kubectl"]},
            "record_as": {"type": "str"},
            "failed_check": {"type": "str"},
            "failed_detail": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    try:
        from mesh.api import ConfigError
        from mesh.local import errors, judgement, smoke, statedir
        from mesh.local import stack as stack_mod
        from mesh.local.cluster_env import ClusterEnvironment
    except ImportError as exc:
        module.fail_json(msg=f"smoke: weir_smoke needs the Weir virtualenv's python "
                             f"(ansible_python_interpreter): {exc}")
    params = module.params
    try:
        settings = stack_mod.load(params["stack"], Path(params["root"]))
        if params["record_as"]:
            settings = dataclasses.replace(settings, state_dir=settings.state_dir.parent / params["record_as"])
        env, release_check = None, params["release_check"]
        if params["platform"] == "kubernetes":
            if not params["ingress_url"]:
                module.fail_json(msg="smoke: ingress_url is required on kubernetes (the stack output ingressAddress)")
            env = ClusterEnvironment(settings.name, params["ingress_url"], params["kubectl"])
            release_check = False  # a cluster's config has no label: the release_in_effect role asks Pulumi
        release, digest = settings.pinned()
        try:
            expectation = smoke.expectation_of(settings)
        except ConfigError:
            expectation = None
        out = {"changed": False, "release": release, "digest": digest, "checks": {},
               "rules": list(judgement.rules_of(expectation)) if expectation else [],
               "books_contract_waived": smoke.contract_waived(expectation)}
        if params["failed_check"]:
            report = smoke.failed(settings, params["failed_check"], params["failed_detail"])
        elif params["run"] and not module.check_mode:
            report = smoke.run(settings, scenario=params["scenario"], release_check=release_check, env=env)
        else:
            module.exit_json(**out)
        if not module.check_mode:
            smoke.record(settings, report, at=statedir.utc_now())
    except errors.WeirError as exc:
        module.fail_json(msg=f"smoke: {exc}")
    doc = report.as_dict()
    out.update(report=doc, checks={check["name"]: check for check in doc["checks"]})
    module.exit_json(**out)


if __name__ == "__main__":
    main()
