"""meshctl's metric views of a local environment: `top` (live request rate, 5xx share and p99 per workload,
mesh.local.top) and `prometheus-config` (scrape targets for a user's Prometheus, mesh.local.prometheus).

Registered on mesh.cli's group (its WeirError mapping applies). Heavy modules (rich, the Prometheus text
parser, which loads mesh.api) are imported inside the commands, so `import mesh.cli` stays fast.
"""

from __future__ import annotations

import json
import sys

import click

from mesh.local import console, environment, statedir
from mesh.local import stack as stack_mod

stack_option = click.option("--stack", default="dev", show_default=True, envvar="WEIR_STACK",
                            help="The stack (stacks/Pulumi.<stack>.yaml); env WEIR_STACK.")


@click.command("top")
@stack_option
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between scrapes; each refresh shows the interval just past.")
@click.option("--once", is_flag=True, help="Print one measurement, over one interval, and exit.")
@click.option("-o", "--output", type=click.Choice(("table", "json")), default="table", show_default=True,
              help="json: one document (with --once) or one line per interval.")
def top_command(stack: str, interval: float, once: bool, output: str) -> None:
    """Request rate, error rate (5xx share) and p99 latency per workload and at the ingress, live."""
    from mesh.local import top

    env = environment.attach(stack, stack_mod.state_dir(stack))
    samples = top.watch(env, interval)
    if once:
        elapsed, rows = next(samples)
        if output == "json":
            return console.print_json(top.as_json(rows, elapsed, stack))
        return console.print_table([top.cells(row) for row in rows], top.COLUMNS)
    try:
        if output == "json":
            for elapsed, rows in samples:
                click.echo(json.dumps(top.as_json(rows, elapsed, stack)))
        else:
            _live(samples, stack, interval)
    except KeyboardInterrupt:
        pass


def _live(samples, stack: str, interval: float) -> None:
    from rich.console import Console
    from rich.live import Live

    with Live(_table([], stack, interval), console=Console(file=sys.stdout), auto_refresh=False) as live:
        for elapsed, rows in samples:
            live.update(_table(rows, stack, elapsed), refresh=True)


def _table(rows, stack: str, elapsed: float):
    from rich.table import Table
    from rich.text import Text

    from mesh.local import top

    table = Table(title=f"stack {stack}: last {elapsed:.1f} s (Ctrl-C to quit)", box=None, header_style="bold")
    for column in top.COLUMNS:
        table.add_column(column.upper(), justify="left" if column in ("workload", "reporter") else "right")
    for row in rows:
        cells = top.cells(row)
        style = "red" if row.error_rate or not row.scraped else None
        table.add_row(*(Text(cells[column], style=style) for column in top.COLUMNS))
    return table


@click.command("prometheus-config")
@stack_option
def prometheus_config_command(stack: str) -> None:
    """A prometheus.yml scraping every sidecar and the ingress gateway of the stack (what `up` writes to
    .weir/<stack>/prometheus.yml): the running plan's ports, else the stack file's."""
    from mesh.local import plan as plan_mod
    from mesh.local import prometheus

    settings = stack_mod.load(stack)
    state = statedir.StateDir(settings.state_dir)
    doc = statedir.read_json(state.plan_file) if environment.supervisor_pid(state) else None
    if doc:
        plan = plan_mod.Plan.from_json(doc)
    else:
        from mesh.manifests import bookinfo

        plan = plan_mod.build(settings, bookinfo.deployments(), bookinfo.services())
    click.echo(prometheus.render(plan), nl=False)
