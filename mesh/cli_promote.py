"""meshctl promote: move a release from one environment to the next (mesh.local.promotion does the work)."""

from __future__ import annotations

import click

from mesh.local import stack as stack_mod


@click.command("promote")
@click.option("--from", "source", required=True, help="The environment whose pinned release is promoted.")
@click.option("--to", "target", required=True, help="The environment that moves to it, step by step.")
@click.option("--dry-run", is_flag=True, help="Print the plan (steps, gates, what cannot be split); change nothing.")
@click.option("--approve", is_flag=True, help="Approve a promotion into a stack that requires it (prod).")
def promote_command(source: str, target: str, dry_run: bool, approve: bool) -> None:
    """Shift TARGET to SOURCE's release by the steps of TARGET's weir:promotion, gated on its sidecar
    metrics and the smoke checks; roll back and exit 1 when a step fails, pin the release when all pass."""
    from mesh import cli_releases
    from mesh.local import promotion, statedir

    if source == target:
        raise click.UsageError("--from and --to name the same environment")
    source_settings, target_settings = stack_mod.load(source), stack_mod.load(target)
    if dry_run:
        try:
            refused = None
            the_plan = promotion.plan(source_settings, target_settings, approve=approve)
        except promotion.PromotionRefused as exc:
            refused = exc
            the_plan = promotion.plan(source_settings, target_settings, approve=approve, gated=False)
        for line in the_plan.describe():
            click.echo(line)
        if refused is not None:
            raise refused
        return
    outcome = promotion.promote(source_settings, target_settings, approve=approve, who=cli_releases.who(),
                                now=statedir.utc_now, log=lambda line: click.echo(line, err=True))
    if outcome.result == "unchanged":
        click.echo(f"{target} already runs {outcome.plan.new.ref}: nothing to promote")
        return
    click.echo(f"promoted {outcome.plan.new.ref} to {target} in {len(outcome.steps)} steps; "
               f"{target} now pins {outcome.plan.new.ref} (stacks/Pulumi.{target}.yaml)")
