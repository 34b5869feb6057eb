"""Pulumi program entry point: reads the stack settings once and wires the infra components.

The GKE components (cluster, platform, workloads, routing) land with the Pulumi issue; until then the
program only exports what the stack pins, so `pulumi preview` runs without creating anything.
"""

import pulumi

config = pulumi.Config("weir")
pulumi.export("routing", config.get("routing") or "round-robin")
