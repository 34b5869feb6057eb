"""What meshctl reads from and prints to the terminal: input files, kubectl/istioctl-style lines, tables
and JSON. No environment logic here: mesh.cli decides, this module only formats."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from mesh.local import errors

ISTIO_GROUPS = {
    **dict.fromkeys(("VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "Sidecar",
                     "WorkloadEntry", "EnvoyFilter"), "networking.istio.io"),
    **dict.fromkeys(("PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication"), "security.istio.io"),
}


def read_inputs(paths: tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, text) per input: files as named, directories expanded (sorted), `-` read from stdin."""
    inputs = []
    for raw in paths:
        if raw == "-":
            inputs.append(("<stdin>", sys.stdin.read()))
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
            if not files:
                raise errors.WeirError(f"{raw}: no *.yaml or *.yml files in this directory")
        elif path.is_file():
            files = [path]
        else:
            raise errors.WeirError(f"{raw}: no such file or directory")
        for file in files:
            try:
                inputs.append((str(file), file.read_text()))
            except (OSError, UnicodeDecodeError) as exc:
                raise errors.WeirError(f"{file}: cannot read: {exc}") from None
    return inputs


def print_push(doc: dict[str, Any], delete: bool) -> None:
    """kubectl-style lines for a control plane apply/delete answer; warnings and misses on stderr."""
    if delete:
        lines = [(key, "deleted") for key in doc.get("deleted", [])]
    else:
        lines = [(c["key"], c["action"]) for c in doc.get("changes", [])] or [
            (key, "configured") for key in doc.get("applied", [])]
    for key, action in lines:
        click.echo(f"{kubectl_ref(key)} {action}")
    for key in doc.get("notFound", []):
        click.echo(f"Warning: {kubectl_ref(key)} not found", err=True)
    for warning in doc.get("warnings", []):
        click.echo(f"Warning: {warning}", err=True)


def kubectl_ref(key: str) -> str:
    """`VirtualService/bookinfo/reviews` → `virtualservice.networking.istio.io/reviews`."""
    kind, _, name = key.partition("/")
    group = ISTIO_GROUPS.get(kind)
    return f"{kind.lower()}{'.' + group if group else ''}/{name.rpartition('/')[2]}"


def resource_ref(key: str) -> str:
    """`VirtualService/bookinfo/reviews` → `VirtualService bookinfo/reviews` (istioctl analyze style)."""
    kind, _, rest = str(key).partition("/")
    return f"{kind} {rest}" if rest else kind


def level(level: Any) -> str:
    value = getattr(level, "value", level)
    return (value if isinstance(value, str) else getattr(level, "name", str(level))).capitalize()


def with_file(exc: Exception, name: str) -> str:
    text = str(exc)
    return text if name in text else f"{name}: {text}"


def hosts(spec: dict[str, Any]) -> str:
    hosts = spec.get("hosts") or ([spec["host"]] if spec.get("host") else [])
    return ",".join(map(str, hosts))


def print_proxies(rows: list[dict[str, Any]]) -> None:
    """The proxy-status columns of the control plane's `/v1/proxies` rows."""
    def nack(row: dict[str, Any]) -> Any:
        last = row.get("lastNack")
        return f"{last.get('version')}: {last.get('error')}" if isinstance(last, dict) else last

    print_table([{"proxy": r.get("proxy"), "sent": r.get("sent"), "acked": r.get("acked"),
                   "status": r.get("status"), "last nack": nack(r)} for r in rows], empty="no proxies connected")


def print_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))


def print_table(rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None, empty: str = "") -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if not rows:
        if empty:
            click.echo(empty)
        return
    columns = columns or tuple(dict.fromkeys(key for row in rows for key in row))
    table = Table(box=None, header_style="bold")
    for column in columns:
        table.add_column(column.upper())
    for row in rows:
        table.add_row(*(Text(_cell(row.get(column))) for column in columns))  # no markup
    Console(file=sys.stdout, width=200 if not sys.stdout.isatty() else None).print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def trace_tree(spans: list[dict[str, Any]]) -> list[str]:
    """A trace's spans as an indented tree, children under their parent in start order: workload, direction,
    method, where, status (flags), duration, and start offset from the trace's first span."""
    if not spans:
        return []
    ids = {s["spanId"] for s in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span["parentSpanId"] if span["parentSpanId"] in ids else ""
        children.setdefault(parent, []).append(span)
    origin = min(s["startTimeUnixNano"] for s in spans)
    lines: list[str] = []

    def walk(span: dict[str, Any], prefix: str, last: bool, depth: int) -> None:
        a = span["attributes"]
        flags = a.get("response_flags")
        status = f"{a.get('http.status_code')}" + (f" ({flags})" if flags and flags != "-" else "")
        took = (span["endTimeUnixNano"] - span["startTimeUnixNano"]) / 1e6
        offset = (span["startTimeUnixNano"] - origin) / 1e6
        branch = "" if depth == 0 else ("└─ " if last else "├─ ")
        lines.append(f"{prefix}{branch}{a.get('workload', '?')} {a.get('direction', '?')}  {a.get('http.method', '')} "
                     f"{span['name']}  {status}  {took:.1f} ms  (+{offset:.1f} ms)")
        kids = sorted(children.get(span["spanId"], ()), key=lambda s: s["startTimeUnixNano"])
        for i, kid in enumerate(kids):
            walk(kid, prefix + ("" if depth == 0 else ("   " if last else "│  ")), i == len(kids) - 1, depth + 1)

    roots = sorted(children.get("", ()), key=lambda s: s["startTimeUnixNano"])
    for root in roots:
        walk(root, "", True, 0)
    return lines
