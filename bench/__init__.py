"""Weir benchmark harness (`make bench` → `bench.run`); see bench/run.py for what is measured and how."""
