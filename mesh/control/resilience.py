"""Istio's resilience settings → the view: an http rule's `timeout`, `retries` and `fault` (the route's
`timeout_s`, `RetryPolicy` and `Fault`), and a DestinationRule's effective `connectionPool` and
`outlierDetection` (the cluster's `ConnectionPool` and `OutlierDetection`).

Follows Istio's translation to Envoy (pilot's retry and fault conversion, applyConnectionPool and
applyOutlierDetection):
- `timeout` unset or `0s`: no route timeout.
- `retries` unset: Istio's default policy (`model.DEFAULT_RETRIES`); `attempts: 0` (or unset inside a
  `retries` block) disables retries altogether, per-try timeout included; `retryOn` unset keeps the
  default conditions and 503; a set `retryOn` replaces both: names are conditions, numbers are
  retriable status codes (and add `retriable-status-codes`). `backoff` is the base interval of the
  jittered backoff, its cap ten times that (Envoy's default max_interval); `retryIgnorePreviousHosts:
  false` lets a retry go to the endpoint that just failed.
- `fault`: a delay or abort with neither `percentage` nor the deprecated integer `percent` is injected
  0% of the time. gRPC-status and HTTP/2-error aborts are not executed (`abort_status` None); a fault left
  with nothing Weir executes is dropped.
- `connectionPool`: a limit of 0 counts as unset, as in Istio (the default, `model.UNLIMITED`, stays);
  `connectTimeout` replaces the 10 s default; `http.idleTimeout` of 0 means none; `tcp.maxConnectionDuration`
  retires a connection after it (at its next release); `tcp.tcpKeepalive`, set even empty, turns TCP
  keepalive on for upstream sockets (time and interval in whole seconds, the OS's values where unset).
- `outlierDetection` unset: no detection. Set: `consecutive5xxErrors` (Envoy's default 5; 0 disables),
  `consecutiveGatewayErrors` (default 0: off); the deprecated `consecutiveErrors` (> 0) becomes the
  gateway-error threshold and switches the 5xx detector off unless `consecutive5xxErrors` is set;
  `interval` 10 s, `baseEjectionTime` 30 s, `maxEjectionPercent` 10 (0 counts as unset),
  `minHealthPercent` 0 (panic threshold off); `splitExternalLocalOriginErrors` counts the failures a proxy
  sees itself apart, `consecutiveLocalOriginFailures` (Envoy's default 5) in a row ejecting.
"""

from __future__ import annotations

from typing import Any

from mesh.view import model

RETRIABLE_STATUS_CODES = "retriable-status-codes"
NO_RETRIES = model.RetryPolicy(attempts=0)
ENVOY_MAX_BACKOFF_FACTOR = 10  # Envoy's retry_back_off.max_interval when only base_interval is set


def timeout_seconds(timeout: Any) -> float | None:
    """A route timeout in seconds; None when unset or `0s` (disabled)."""
    if timeout is None or timeout.seconds <= 0:
        return None
    return timeout.seconds


def retry_policy(retries: Any) -> model.RetryPolicy:
    if retries is None:
        return model.DEFAULT_RETRIES
    if not retries.attempts:
        return NO_RETRIES
    settings: dict[str, Any] = {"attempts": retries.attempts,
                                "avoid_previous_host": retries.retry_ignore_previous_hosts is not False}
    if retries.per_try_timeout is not None:
        settings["per_try_timeout_s"] = retries.per_try_timeout.seconds
    if retries.backoff is not None:
        settings["backoff_base_s"] = retries.backoff.seconds
        settings["backoff_max_s"] = ENVOY_MAX_BACKOFF_FACTOR * retries.backoff.seconds
    if (retries.retry_on or "").strip():
        settings["retry_on"], settings["retriable_status"] = parse_retry_on(retries.retry_on)
    return model.RetryPolicy(**settings)


def parse_retry_on(text: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """`"5xx, 503,reset"` → (("5xx", "reset", "retriable-status-codes"), (503,)); order kept, no duplicates."""
    names: list[str] = []
    codes: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.isdigit():
            if int(item) not in codes:
                codes.append(int(item))
        elif item not in names:
            names.append(item)
    if codes and RETRIABLE_STATUS_CODES not in names:
        names.append(RETRIABLE_STATUS_CODES)
    return tuple(names), tuple(codes)


def fault(spec: Any) -> model.Fault | None:
    if spec is None:
        return None
    delay_s = abort_status = None
    delay_percent = abort_percent = 0.0
    if spec.delay is not None and spec.delay.fixed_delay is not None:
        delay_s = spec.delay.fixed_delay.seconds
        delay_percent = _percent(spec.delay)
    if spec.abort is not None and spec.abort.http_status is not None:
        abort_status = spec.abort.http_status
        abort_percent = _percent(spec.abort)
    if delay_s is None and abort_status is None:
        return None  # only exponential delays or gRPC/HTTP2 aborts: nothing Weir executes
    return model.Fault(
        delay_s=delay_s, delay_percent=delay_percent, abort_status=abort_status, abort_percent=abort_percent
    )


def _percent(part: Any) -> float:
    """`percentage.value`, else the deprecated integer `percent` (delay only), else 0: never injected."""
    if part.percentage is not None:
        return float(part.percentage.value)
    return float(getattr(part, "percent", None) or 0)


def connection_pool(settings: Any) -> model.ConnectionPool:
    """The effective `connectionPool` (see `mesh.control.clusters.effective_setting`) → `ConnectionPool`."""
    if settings is None:
        return model.DEFAULT_CONNECTION_POOL
    values: dict[str, Any] = {}
    tcp, http = settings.tcp, settings.http
    if tcp is not None:
        if tcp.max_connections:
            values["max_connections"] = tcp.max_connections
        if tcp.connect_timeout is not None:
            values["connect_timeout_s"] = tcp.connect_timeout.seconds
        if tcp.max_connection_duration is not None:
            values["max_connection_duration_s"] = tcp.max_connection_duration.seconds
        if tcp.tcp_keepalive is not None:  # set, even empty: keepalive on (Envoy's upstream_connection_options)
            keepalive = tcp.tcp_keepalive
            values.update(tcp_keepalive=True, keepalive_probes=keepalive.probes or None,
                          keepalive_time_s=_whole_seconds(keepalive.time),
                          keepalive_interval_s=_whole_seconds(keepalive.interval))
    if http is not None:
        for source, target in (
            ("http1_max_pending_requests", "max_pending_requests"),
            ("http2_max_requests", "max_requests"),
            ("max_requests_per_connection", "max_requests_per_connection"),
            ("max_retries", "max_retries"),
        ):
            if getattr(http, source):
                values[target] = getattr(http, source)
        if http.idle_timeout is not None and http.idle_timeout.seconds > 0:
            values["idle_timeout_s"] = http.idle_timeout.seconds
    return model.ConnectionPool(**values) if values else model.DEFAULT_CONNECTION_POOL


def _whole_seconds(duration: Any) -> int | None:
    """A keepalive duration as Envoy's socket options take it: whole seconds, at least 1; None when unset."""
    return max(1, int(duration.seconds)) if duration is not None and duration.seconds > 0 else None


def outlier_detection(spec: Any) -> model.OutlierDetection | None:
    """The effective `outlierDetection` → `OutlierDetection`; None when unset (no detection)."""
    if spec is None:
        return None
    default = model.OutlierDetection()
    consecutive_5xx, gateway = default.consecutive_5xx, default.consecutive_gateway_errors
    if spec.consecutive_errors:  # deprecated: gateway errors only (istio/api#617)
        consecutive_5xx, gateway = 0, spec.consecutive_errors
    if spec.consecutive_5xx_errors is not None:
        consecutive_5xx = spec.consecutive_5xx_errors
    if spec.consecutive_gateway_errors is not None:
        gateway = spec.consecutive_gateway_errors
    return model.OutlierDetection(
        consecutive_5xx=consecutive_5xx,
        consecutive_gateway_errors=gateway,
        interval_s=spec.interval.seconds if spec.interval is not None else default.interval_s,
        base_ejection_time_s=(
            spec.base_ejection_time.seconds
            if spec.base_ejection_time is not None
            else default.base_ejection_time_s
        ),
        max_ejection_percent=float(spec.max_ejection_percent or default.max_ejection_percent),
        min_health_percent=float(spec.min_health_percent or 0),
        split_local_origin=bool(spec.split_external_local_origin_errors),
        # Istio sends Envoy a count only above 0: unset or 0 is Envoy's default.
        consecutive_local_origin=spec.consecutive_local_origin_failures or default.consecutive_local_origin,
    )
