"""meshctl's `dashboard`: where the stack's service graph page is (served by its control plane,
mesh.control.dashboard), optionally opened in a browser.

Registered on mesh.cli's group (its WeirError mapping applies). The URL comes from the running
environment (its plan's `dashboard` URL), else from the stack file (`weir:local.dashboardPort`).
"""

from __future__ import annotations

import webbrowser

import click

from mesh.local import client, environment, errors
from mesh.local import stack as stack_mod

PROBE_TIMEOUT = 2.0  # seconds


@click.command("dashboard")
@click.option("--stack", default="dev", show_default=True, envvar="WEIR_STACK",
              help="The stack (stacks/Pulumi.<stack>.yaml); env WEIR_STACK.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser too.")
def dashboard_command(stack: str, open_browser: bool) -> None:
    """Print the URL of the live service graph (workloads, traffic, config badges), like Kiali."""
    settings = stack_mod.load(stack)
    try:
        url = environment.attach(stack, settings.state_dir).urls()["dashboard"]
    except errors.NotRunning:
        url = f"http://127.0.0.1:{settings.dashboard_port}/"
        click.echo(f"stack {stack} is not running (meshctl up --stack {stack}); its dashboard will be at:", err=True)
    else:
        if not _answers(url):
            click.echo(f"warning: nothing answers at {url} yet", err=True)
    click.echo(url)
    if open_browser:
        webbrowser.open(url)


def _answers(url: str) -> bool:
    return client.probe(url, PROBE_TIMEOUT)
