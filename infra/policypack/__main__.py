"""CrossGuard pack wrapping `infra.policy` (the plain functions the tests check):

    .venv/bin/pip install -r infra/policypack/requirements.txt   # once: pulumi-policy, in the project venv
    pulumi preview --policy-pack infra/policypack      # or: pulumi up --policy-pack infra/policypack

Every policy is mandatory. `pulumi_policy` is imported here only, so the project and its tests never need it.
"""

import sys
from pathlib import Path

from pulumi_policy import EnforcementLevel, PolicyPack, ResourceValidationPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `infra.policy`

from infra import policy  # noqa: E402


def _validator(check):
    def validate(args, report_violation):
        for message in check(args.resource_type, args.props):
            report_violation(message)

    return validate


PolicyPack(
    name="weir",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        ResourceValidationPolicy(name=p.name, description=p.description, validate=_validator(p.check))
        for p in policy.POLICIES
    ],
)
