"""meshctl's release commands: `release create|list|show`, `diff ENV_A ENV_B`.

Registered on mesh.cli's group (its error mapping applies). Releases are files under `stacks/releases/`
(mesh.manifests.releases); nothing here needs a running environment.
"""

from __future__ import annotations

import getpass
import json
import socket

import click

from mesh.local import errors
from mesh.local import stack as stack_mod
from mesh.local.statedir import utc_now
from mesh.manifests import release_diff, releases


def _store() -> releases.ReleaseStore:
    return releases.ReleaseStore(stack_mod.find_root())


def who() -> str:
    """`user@host`, recorded with releases and promotions."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _checked(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except releases.ReleaseError as exc:
        raise errors.WeirError(str(exc)) from None


@click.group("release")
def release_group() -> None:
    """Routing releases: immutable, content-addressed snapshots of a scenario (stacks/releases/)."""


@release_group.command("create")
@click.argument("scenario")
def release_create(scenario: str) -> None:
    """Record stacks/routing/SCENARIO.yaml as its next release (or name the release it already is)."""
    from mesh.api import ConfigError

    root = stack_mod.find_root()
    path = root / stack_mod.STACKS_DIR / "routing" / f"{scenario.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        raise errors.WeirError(f"no scenario {scenario!r}: {path} does not exist")
    try:
        release, created = _checked(_store().create, path, created=utc_now(), created_by=who())
    except ConfigError as exc:
        raise errors.WeirError(str(exc)) from None
    verb = "created" if created else "unchanged, already"
    click.echo(f"release {release.ref} {verb} ({release.digest})")
    click.echo(f"pin it in a stack file:\n  weir:release: {release.ref}\n  weir:releaseDigest: {release.digest}")


@release_group.command("list")
@click.option("-o", "--output", type=click.Choice(("table", "json")), default="table", show_default=True)
def release_list(output: str) -> None:
    """Every recorded release (each verified against its digest), and which stacks pin it."""
    root = stack_mod.find_root()
    found = _checked(_store().list)
    pinned: dict[str, list[str]] = {}
    for stack_file in sorted((root / stack_mod.STACKS_DIR).glob("Pulumi.*.yaml")):
        name = stack_file.name[len("Pulumi."):-len(".yaml")]
        settings = stack_mod.load(name, root)
        if settings.release is not None:
            pinned.setdefault(settings.release.ref, []).append(name)
    rows = [{"release": r.ref, "digest": r.digest, "created": r.created, "createdBy": r.created_by,
             "resources": len(r.resources), "pinnedBy": pinned.get(r.ref, [])} for r in found]
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'RELEASE':24} {'DIGEST':20} {'CREATED':21} {'RESOURCES':>9}  PINNED BY")
    for row in rows:
        click.echo(f"{row['release']:24} {row['digest'][:19]:20} {row['created']:21} {row['resources']:>9}  "
                   f"{', '.join(row['pinnedBy']) or '-'}")


@release_group.command("show")
@click.argument("ref")
def release_show(ref: str) -> None:
    """One release's record and its resources as Istio YAML."""
    release = _checked(_store().get, ref)
    click.echo(f"# {release.ref} {release.digest} created {release.created} by {release.created_by} "
               f"from {release.source}")
    click.echo(release.istio_yaml(), nl=False)


@click.command("diff")
@click.argument("env_a")
@click.argument("env_b")
@click.option("-o", "--output", type=click.Choice(("table", "json")), default="table", show_default=True)
def diff_command(env_a: str, env_b: str, output: str) -> None:
    """Resource-level diff of what two environments run (their pinned releases). Exit 0 either way."""
    a, b = stack_mod.load(env_a), stack_mod.load(env_b)
    changes = release_diff.diff(a.routing_resources(), b.routing_resources(), a_name=env_a, b_name=env_b)
    if output == "json":
        click.echo(json.dumps({env_a: a.routing, env_b: b.routing,
                               "changes": [c.as_dict() for c in changes]}, indent=2))
        return
    click.echo(f"{env_a}: {a.routing}   {env_b}: {b.routing}")
    if not changes:
        click.echo("no difference: both run the same resources")
    marks = {release_diff.ADDED: "+", release_diff.REMOVED: "-", release_diff.CHANGED: "~"}
    for change in changes:
        where = env_b if change.change == release_diff.ADDED else env_a
        only = f" (only in {where})" if change.change != release_diff.CHANGED else ""
        click.echo(f"{marks[change.change]} {change.key}{only}")
        for line in change.lines:
            click.echo(f"    {line}")
