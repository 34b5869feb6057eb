"""meshctl trace: one request's path through the mesh, from the spans the control plane collected."""

from __future__ import annotations

import json
import urllib.parse

import click

from mesh.local import client, console, environment, errors
from mesh.local import stack as stack_mod


@click.command("trace")
@click.argument("request_id", required=False)
@click.option("--stack", default="dev", show_default=True, envvar="WEIR_STACK",
              help="The stack (stacks/Pulumi.<stack>.yaml); env WEIR_STACK.")
@click.option("--trace-id", default=None, help="Look the trace up by its id instead of a request id.")
@click.option("-o", "--output", type=click.Choice(("tree", "json")), default="tree", show_default=True)
def trace_command(request_id: str | None, stack: str, trace_id: str | None, output: str) -> None:
    """Print the span tree of the request REQUEST_ID (its x-request-id) through ingress, gw, books and
    ratings, with each hop's timing; without an argument, list the recent traces."""
    env = environment.attach(stack, stack_mod.state_dir(stack))
    query = {"request_id": request_id} if request_id else {"trace_id": trace_id} if trace_id else {}
    url = f"{env.control_url}/v1/traces" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    try:
        doc = client.call("GET", url).json()
    except errors.RequestFailed as exc:
        raise errors.WeirError(str(exc)) from None
    if output == "json":
        click.echo(json.dumps(doc, indent=2))
        return
    if not query:
        for row in doc.get("traces", []):
            click.echo(f"{row['traceId']}  {row['spans']:>3} spans  {row['durationMs']:>9.1f} ms  "
                       f"{row.get('requestId') or '-'}  {row['root']}")
        return
    spans = doc["spans"]
    total = (max(s["endTimeUnixNano"] for s in spans) - min(s["startTimeUnixNano"] for s in spans)) / 1e6
    click.echo(f"trace {doc['traceId']}: {len(spans)} spans, {total:.1f} ms")
    for line in console.trace_tree(spans):
        click.echo(line)
