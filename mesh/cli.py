"""meshctl: run Weir's mesh locally, push Istio YAML to it, and look inside it.

Commands only: terminal input and output live in mesh.local.console; environments are started and
stopped by mesh.local.runtime, reached through mesh.local.environment; the configuration commands (apply,
delete, validate, analyze, get) are in mesh.cli_config, whose `load_api` imports mesh.api on demand.
Expected failures are mesh.local.errors.WeirError, mapped once (in `_Group.invoke`) to a message on
stderr and exit code 1.
"""

from __future__ import annotations

import re
from typing import Any

import click

from mesh import cli_config
from mesh.local import certstatus, console, environment, errors, runtime
from mesh.local import stack as stack_mod

PROXY_RESOURCES = ("routes", "clusters", "endpoints", "listeners", "secrets")


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.WeirError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


stack_option = click.option("--stack", default="dev", show_default=True, envvar="WEIR_STACK",
                            help="The stack (stacks/Pulumi.<stack>.yaml); env WEIR_STACK.")


def output_option(*choices: str) -> Any:
    return click.option("-o", "--output", type=click.Choice(("table", *choices)), default="table", show_default=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """meshctl: run Weir's service mesh locally and drive it with Istio's traffic API."""


# environment lifecycle


@main.command()
@stack_option
@click.option("--timeout", type=float, default=runtime.UP_TIMEOUT, show_default=True, help="Seconds to wait for readiness.")
def up(stack: str, timeout: float) -> None:
    """Start control plane, ingress and all workloads with sidecars; apply the stack's routing."""
    from rich.console import Console

    settings = stack_mod.load(stack)
    with Console(stderr=True).status(f"starting stack {stack}…") as spinner:
        def progress(ready: int, total: int, waiting: list[str]) -> None:
            more = "…" if len(waiting) > 4 else ""
            spinner.update(f"stack {stack}: {ready}/{total} ready, waiting for {', '.join(waiting[:4])}{more}")

        result = runtime.up(settings, timeout=timeout, on_progress=progress)
    verb = "started" if result.started else "already running"
    click.echo(f"stack {stack} {verb} (supervisor pid {result.pid}, state {result.state_dir})")
    console.print_push(result.routing, delete=False)
    label = result.routing.get("label") or {}
    click.echo(f"{'release:':14} {label.get('release')} ({label.get('digest')})")
    for name, url in result.urls.items():
        click.echo(f"{name + ':':14} {url}")


@main.command()
@stack_option
def down(stack: str) -> None:
    """Stop everything `up` started."""
    click.echo(runtime.down(stack, stack_mod.state_dir(stack)))


@main.command()
@stack_option
@output_option("json")
def status(stack: str, output: str) -> None:
    """Workloads, proxies, config sync, certificates and URLs of the running environment."""
    env = _attach(stack)
    doc = env.status()
    doc["certificates"] = certstatus.collect(env)
    doc["warnings"] = [warning for row in doc["certificates"] for warning in row["warnings"]]
    doc["release"] = env.config_label() if doc["controlPlane"]["reachable"] else None
    if output == "json":
        return console.print_json(doc)
    sup = doc["supervisor"]
    click.echo(f"stack {doc['stack']}: supervisor pid {sup['pid']} {sup['status']} since {sup['started_at']}")
    console.print_table(doc["processes"], ("name", "role", "pid", "status", "ready", "restarts", "ports"))
    if doc["controlPlane"]["reachable"]:
        console.print_proxies(doc["proxies"])
        release = doc["release"] or {}
        click.echo(f"config: {doc['config']['synced']} synced, {doc['config']['stale']} stale; release "
                   f"{release.get('release', 'none (changed by hand since the last up)')}")
    else:
        click.echo(f"control plane unreachable: {doc['controlPlane']['error']}")
    valid = sum(1 for row in doc["certificates"] if row.get("state") == "ACTIVE")
    click.echo(f"certificates: {valid}/{len(doc['certificates'])} proxies hold a valid workload certificate")
    for warning in doc["warnings"]:
        click.echo(f"Warning: {warning}", err=True)
    for name, url in doc["urls"].items():
        click.echo(f"{name + ':':14} {url}")


# proxies and apps


@main.command("proxy-config")
@stack_option
@click.argument("workload")
@click.argument("resource", required=False, type=click.Choice(PROXY_RESOURCES))
def proxy_config(stack: str, workload: str, resource: str | None) -> None:
    """The live view of a workload's sidecar (or `ingress`), as JSON; `secrets`: its certificate chain,
    SPIFFE ID, validity, root fingerprint and rotation state (never the key)."""
    console.print_json(_attach(stack).config_dump(workload, resource))


@main.command("proxy-status")
@stack_option
@output_option("json")
def proxy_status(stack: str, output: str) -> None:
    """Per proxy: config version sent and acked, last NACK, synced or stale."""
    rows = _attach(stack).proxies()
    if output == "json":
        return console.print_json(rows)
    console.print_proxies(rows)


@main.command()
@stack_option
@click.argument("workload")
def stats(stack: str, workload: str) -> None:
    """The sidecar's Prometheus metrics."""
    click.echo(_attach(stack).stats(workload), nl=False)


@main.command()
@stack_option
@click.argument("workload")
@click.option("--proxy", is_flag=True, help="The sidecar's log instead of the app's.")
@click.option("--tail", type=click.IntRange(min=0), default=None, help="Only the last N lines.")
def logs(stack: str, workload: str, proxy: bool, tail: int | None) -> None:
    """A workload's app or sidecar log (`ingress`, `control` and `supervisor` too); works after `down`."""
    path = environment.log_file(stack_mod.state_dir(stack), workload, proxy)
    click.echo(environment.tail(path, tail), nl=False)


@main.command()
@stack_option
@click.argument("workload")
@click.option("--error-rate", type=click.FloatRange(0.0, 1.0), help="Fraction of requests answered 500.")
@click.option("--delay", help="Latency added to each request: 2s, 500ms, or seconds.")
@click.option("--status", type=click.IntRange(400, 599), help="Status of the injected failures (default 500).")
@click.option("--reset", is_flag=True, help="Turn the failure switch off.")
def chaos(stack: str, workload: str, error_rate: float | None, delay: str | None, status: int | None,
          reset: bool) -> None:
    """Show or set an app's failure switch (error rate, added latency, failure status)."""
    change: dict[str, Any] = {}
    if error_rate is not None:
        change["error_rate"] = error_rate
    if delay is not None:
        change["delay"] = _duration_seconds(delay)
    if status is not None:
        change["status"] = status
    if reset and change:
        raise click.UsageError("--reset cannot be combined with --error-rate, --delay or --status")
    console.print_json(_attach(stack).chaos(workload, change, reset=reset))


@main.command()
@stack_option
@click.option("-o", "--output-dir", "output_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for platform.yaml, bookinfo.yaml and routing.yaml (created if missing).")
def render(stack: str, output_dir: str) -> None:
    """The Kubernetes manifests the stack's Pulumi program deploys, for `kubectl apply -f` in file order."""
    from pathlib import Path

    import yaml

    from mesh.manifests import stack as manifests

    groups = _render(stack_mod.load(stack), manifests)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for group, objects in groups.items():
        path = out / f"{group}.yaml"
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False), encoding="utf-8")
        click.echo(f"{path}: {len(objects)} objects")


# helpers


def _render(settings: stack_mod.StackSettings, manifests: Any) -> dict[str, list[dict]]:
    from mesh.manifests.settings import ManifestSettings

    try:
        manifest_settings = ManifestSettings(
            stack=settings.name, image=settings.image, routing=settings.routing_resources(),
            admin_users=settings.admin_users, mtls_mode=settings.mtls_mode,
            outbound_policy=settings.outbound_policy, workload_cert_ttl=settings.workload_cert_ttl or "24h",
            otlp_endpoint=settings.otlp_endpoint)
        return manifests.render(manifest_settings)
    except cli_config.load_api().ConfigError as exc:
        raise errors.WeirError(f"stack {settings.name}: routing {settings.routing_file}: {exc}") from None


def _register_commands() -> None:
    from mesh import cli_dashboard, cli_lifecycle, cli_promote, cli_releases, cli_smoke, cli_top, cli_trace

    main.add_command(cli_config.apply_command)
    main.add_command(cli_config.delete_command)
    main.add_command(cli_config.validate_command)
    main.add_command(cli_config.analyze_command)
    main.add_command(cli_config.get_command)
    main.add_command(cli_releases.release_group)
    main.add_command(cli_releases.diff_command)
    main.add_command(cli_smoke.smoke_command)
    main.add_command(cli_promote.promote_command)
    main.add_command(cli_dashboard.dashboard_command)
    main.add_command(cli_top.top_command)
    main.add_command(cli_top.prometheus_config_command)
    main.add_command(cli_trace.trace_command)
    main.add_command(cli_lifecycle.restart_command)
    main.add_command(cli_lifecycle.stop_command)
    main.add_command(cli_lifecycle.start_command)


_register_commands()


def _attach(stack: str) -> environment.Environment:
    return environment.attach(stack, stack_mod.state_dir(stack))


def _duration_seconds(text: str) -> float:
    """`--delay`: plain seconds (`1.5`) or a duration as `mesh.api` reads one (`2s`, `500ms`), as in a
    scenario's `setup[].delay`."""
    if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", text):
        return float(text)
    try:
        return cli_config.load_api().types.parse_duration(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration (2s, 500ms, 1.5)", param_hint="--delay") from None


if __name__ == "__main__":
    main()
