"""atheris target: the Istio YAML edge (mesh.api.loader.load_text) on fuzzed text.

Invariant: every input either loads, and what loads survives dump → YAML → load unchanged, or is refused
with ConfigError; never another exception (KeyError, TypeError, RecursionError...), and never slowly (the
loader bounds nesting and alias expansion: MAX_YAML_DEPTH, MAX_YAML_NODES).

Run: `make fuzz FUZZ_TARGET=yaml`, or .venv/bin/python fuzz/yaml_target.py fuzz/corpus/yaml -max_total_time=300
`check(data)` runs one input without atheris (tests/mesh/api/test_properties.py replays the seed corpus).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def check(data: bytes) -> None:
    import yaml

    from mesh.api import ConfigError, dump, load_text

    text = data.decode("utf-8", errors="replace")
    try:
        resources = load_text(text, "fuzz.yaml")
    except ConfigError:
        return
    for resource in resources:
        [again] = load_text(yaml.safe_dump(dump(resource)), "again.yaml")
        if again != resource:
            raise AssertionError(f"round trip changed {resource!r} into {again!r}")


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["mesh.api"]):
        import mesh.api  # noqa: F401
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
