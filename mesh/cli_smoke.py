"""meshctl's `smoke`: check a running local environment against its baseline and its pinned release's
expectation (mesh.local.smoke), record the result for promotion, exit 1 when any check fails.

Registered on mesh.cli's group (its WeirError mapping applies). The Ansible playbook playbooks/smoke.yml
runs the same checks through playbooks/library/weir_smoke.py.
"""

from __future__ import annotations

import click

from mesh.local import console
from mesh.local import stack as stack_mod
from mesh.local.statedir import utc_now


@click.command("smoke")
@click.option("--stack", default="dev", show_default=True, envvar="WEIR_STACK",
              help="The stack (stacks/Pulumi.<stack>.yaml); env WEIR_STACK.")
@click.option("--baseline-only", is_flag=True,
              help="Only the baseline checks (readiness, sync, release, books contract): no scenario traffic.")
@click.option("-o", "--output", type=click.Choice(("table", "json")), default="table", show_default=True)
@click.pass_context
def smoke_command(ctx: click.Context, stack: str, baseline_only: bool, output: str) -> None:
    """Smoke-check the environment: baseline, then each rule of its release's weir.dev/expect annotation."""
    from mesh.local import smoke  # loads mesh.api: only for this command

    settings = stack_mod.load(stack)
    report = smoke.run(settings, scenario=not baseline_only)
    at = utc_now()
    smoke.record(settings, report, at=at)
    if output == "json":
        console.print_json({**report.as_dict(), "at": at})
    else:
        click.echo(f"stack {report.stack}: release {report.release} ({report.digest})")
        for check in report.checks:
            click.echo(f"  {'PASS' if check.passed else 'FAIL'}  {check.name:18} {check.detail}")
        verdict = "passed" if report.passed else f"FAILED ({', '.join(c.name for c in report.checks if not c.passed)})"
        click.echo(f"smoke {verdict}; recorded in {settings.state_dir / smoke.SMOKE_FILE}")
    if not report.passed:
        ctx.exit(1)
