"""Istio rules more than one end-to-end test applies, as YAML text (the fixed scenarios are files in
stacks/routing, applied with `Mesh.apply`)."""

from __future__ import annotations


def outlier_books(consecutive_5xx: int, base_ejection_s: int, max_ejection_percent: int) -> str:
    """Round robin over books v1/v2 (the dev routing) with outlier detection swept every second; a route
    with no retry policy of its own (Istio's default: 2 retries on connect-failure and 503). Appending a
    `    retries: {...}` line gives the route one."""
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: books, namespace: bookinfo}}
spec:
  host: books
  trafficPolicy:
    loadBalancer: {{simple: ROUND_ROBIN}}
    outlierDetection: {{consecutive5xxErrors: {consecutive_5xx}, interval: 1s, baseEjectionTime: {base_ejection_s}s,
                       maxEjectionPercent: {max_ejection_percent}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: books, namespace: bookinfo}}
spec:
  hosts: [books]
  http:
  - route: [{{destination: {{host: books}}}}]
"""
