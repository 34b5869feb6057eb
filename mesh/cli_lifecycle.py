"""meshctl's workload lifecycle commands for the local runtime: `restart`, `stop` and `start WORKLOAD`.

Each leaves a request in the running supervisor's mailbox (mesh.local.mailbox) and waits for its answer:
the supervisor does the work (mesh.local.lifecycle): the workload leaves the registry and the push is
acked before anything stops; the app stops before its sidecar and starts after it. Registered on
mesh.cli's group (its WeirError mapping applies).
"""

from __future__ import annotations

import click

from mesh.local import console, environment, errors, mailbox, process
from mesh.local import stack as stack_mod

stack_option = click.option("--stack", default="dev", show_default=True, envvar="WEIR_STACK",
                            help="The stack (stacks/Pulumi.<stack>.yaml); env WEIR_STACK.")
output_option = click.option("-o", "--output", type=click.Choice(("table", "json")), default="table",
                             show_default=True)
timeout_option = click.option("--timeout", type=float, default=mailbox.RESULT_TIMEOUT_S, show_default=True,
                              help="Seconds to wait for the supervisor's answer.")


def _run(stack: str, action: str, workload: str, timeout: float, output: str) -> None:
    env = environment.attach(stack, stack_mod.state_dir(stack))
    request_id = mailbox.submit(env.state, action, workload)
    result = mailbox.wait_result(env.state, request_id, lambda: process.alive(env.pid), timeout)
    if output == "json":
        console.print_json(result)
    else:
        for step in result["steps"]:
            click.echo(f"{step['at']:7.2f}s  {step['step']}")
    if not result["ok"]:
        raise errors.WeirError(f"{action} {workload}: {result['error']}")
    if output != "json":
        click.echo(f"{action} {workload}: done in {result['seconds']:.1f} s")


@click.command("restart")
@stack_option
@output_option
@timeout_option
@click.argument("workload")
def restart_command(stack: str, output: str, timeout: float, workload: str) -> None:
    """Restart a workload without losing requests: out of the registry, app then sidecar stopped
    (draining), sidecar then app started, back in the registry once ready."""
    _run(stack, "restart", workload, timeout, output)


@click.command("stop")
@stack_option
@output_option
@timeout_option
@click.argument("workload")
def stop_command(stack: str, output: str, timeout: float, workload: str) -> None:
    """Take a workload out of the registry and stop it, app before sidecar; it stays stopped until `start`."""
    _run(stack, "stop", workload, timeout, output)


@click.command("start")
@stack_option
@output_option
@timeout_option
@click.argument("workload")
def start_command(stack: str, output: str, timeout: float, workload: str) -> None:
    """Start a stopped workload, sidecar before app, and put it back in the registry once ready."""
    _run(stack, "start", workload, timeout, output)
