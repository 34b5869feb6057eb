"""The image pipeline (cloudbuild.yaml) builds the Dockerfile and pushes where the stacks' `weir:image` and
the ImageRegistry component say the image lives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILD = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
IMAGE = "${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_REPOSITORY}/weir:${_TAG}"


def test_it_builds_the_dockerfile_checks_the_image_and_pushes_one_image() -> None:
    build, smoke = BUILD["steps"]
    assert build["args"] == ["build", "--tag", IMAGE, "."] and (ROOT / "Dockerfile").is_file()
    assert smoke["args"][:3] == ["run", "--rm", IMAGE] and "mesh.proxy" in smoke["args"][-1]
    assert BUILD["images"] == [IMAGE]


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_each_stack_image_is_in_its_projects_registry_as_the_pipeline_pushes_it(stack: str) -> None:
    config = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    pattern = (re.escape(IMAGE).replace(re.escape("${_REGION}"), re.escape(config["gcp:region"]))
               .replace(re.escape("${PROJECT_ID}"), re.escape(config["gcp:project"]))
               .replace(re.escape("${_REPOSITORY}"), re.escape(config.get("weir:registry", "weir")))
               .replace(re.escape("${_TAG}"), r"[\w][\w.-]{0,127}"))
    assert re.fullmatch(pattern, config["weir:image"]), config["weir:image"]
