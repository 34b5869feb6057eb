"""meshctl's configuration commands: `apply`, `delete`, `validate`, `analyze` and `get` of Istio YAML.

`apply` and `delete` push files to the running environment (on error nothing is applied); `validate` and
`analyze` check them with mesh.api, loaded on demand by `load_api`, and need no environment; `get` lists
what the control plane holds. Registered on mesh.cli's group (its WeirError mapping applies).
"""

from __future__ import annotations

import functools
from typing import Any

import click

from mesh.local import console, environment, errors
from mesh.local import stack as stack_mod

SCHEMA_CODE = "IST0106"  # Istio's SchemaValidationError

stack_option = click.option("--stack", default="dev", show_default=True, envvar="WEIR_STACK",
                            help="The stack (stacks/Pulumi.<stack>.yaml); env WEIR_STACK.")
output_option = click.option("-o", "--output", type=click.Choice(("table", "json")), default="table",
                             show_default=True)


def files_option(command: Any) -> Any:
    """`-f PATH…`: repeatable, and the paths after one `-f` count too (`-f a.yaml b.yaml`)."""

    @functools.wraps(command)
    def merged(*args: Any, paths: tuple[str, ...], more_paths: tuple[str, ...], **kwargs: Any) -> Any:
        return command(*args, paths=paths + more_paths, **kwargs)

    merged = click.argument("more_paths", nargs=-1)(merged)
    return click.option("-f", "--filename", "paths", multiple=True, required=True,
                        help="A YAML file, a directory (all *.yaml/*.yml inside) or - for stdin.")(merged)


def load_api() -> Any:
    """mesh.api, imported on first use; its absence is an expected failure, not a traceback."""
    try:
        import mesh.api as api
    except ImportError as exc:
        raise errors.WeirError(f"mesh.api is not available: {exc}") from None
    return api


def _attach(stack: str) -> environment.Environment:
    return environment.attach(stack, stack_mod.state_dir(stack))


@click.command("apply")
@stack_option
@files_option
def apply_command(stack: str, paths: tuple[str, ...]) -> None:
    """Validate and push Istio YAML; on error nothing is applied."""
    env = _attach(stack)
    console.print_push(env.push_config(console.read_inputs(paths)), delete=False)


@click.command("delete")
@stack_option
@files_option
def delete_command(stack: str, paths: tuple[str, ...]) -> None:
    """Remove the resources named in the files."""
    env = _attach(stack)
    console.print_push(env.push_config(console.read_inputs(paths), delete=True), delete=True)


@click.command("validate")
@files_option
@click.pass_context
def validate_command(ctx: click.Context, paths: tuple[str, ...]) -> None:
    """Check each file on its own (schema and values); exit 0 only when all are valid."""
    api = load_api()
    failed = False
    for name, text in console.read_inputs(paths):
        try:
            resources = api.load_text(text, name)
        except api.ConfigError as exc:
            failed = True
            click.echo(f"✘ {console.with_file(exc, name)}", err=True)
        else:
            click.echo(f"✔ {name} ({len(resources)} resources)")
    if failed:
        ctx.exit(1)


@click.command("analyze")
@files_option
@click.pass_context
def analyze_command(ctx: click.Context, paths: tuple[str, ...]) -> None:
    """Validation plus cross-resource checks, Istio analyzer style; nothing is applied."""
    api = load_api()
    inputs = console.read_inputs(paths)
    resources, failed = [], False
    for name, text in inputs:
        try:
            resources += api.load_text(text, name)
        except api.ConfigError as exc:
            failed = True
            where = console.resource_ref(exc.resource) if getattr(exc, "resource", None) else name
            click.echo(f"Error [{SCHEMA_CODE}] ({where}) Schema validation error: {console.with_file(exc, name)}")
    lines = []
    for message in api.analyze(resources):
        level = console.level(message.level)
        failed = failed or level == "Error"
        lines.append(f"{level} [{message.code}] ({console.resource_ref(message.resource_key)}) {message.text}")
    for line in lines:
        click.echo(line)
    if not lines and not failed:
        click.echo(f"✔ No validation issues found when analyzing {len(resources)} resources in {len(inputs)} files.")
    if failed:
        ctx.exit(1)


@click.command("get")
@stack_option
@output_option
@click.argument("kind")
@click.argument("name", required=False)
def get_command(stack: str, output: str, kind: str, name: str | None) -> None:
    """List applied resources of KIND (vs, dr, gw, se, …), or one by NAME."""
    resources = _attach(stack).config(kind)  # the control plane resolves aliases and plurals (vs, gateways)
    if name:
        resources = [r for r in resources if r.get("metadata", {}).get("name") == name]
        if not resources:
            raise errors.WeirError(f'{kind} "{name}" not found')
    if output == "json":
        return console.print_json(resources)
    rows = [{"kind": r.get("kind"), "namespace": r.get("metadata", {}).get("namespace"),
             "name": r.get("metadata", {}).get("name"), "hosts": console.hosts(r.get("spec") or {})} for r in resources]
    console.print_table(rows, empty=f"no {kind} resources applied")
