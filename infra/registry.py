"""`ImageRegistry`: the Artifact Registry repository holding Weir's one image (mesh + bookinfo-lite).

CI builds and pushes the image; `pulumi up` only makes sure the repository exists and that the cluster's
node service account may pull from it (reader on this repository, nothing project-wide).
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from infra import settings as stack_settings


class ImageRegistry(pulumi.ComponentResource):
    """A DOCKER-format repository in the stack's region, readable by the nodes."""

    def __init__(self, name: str, settings: stack_settings.StackSettings, reader: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("weir:infra:ImageRegistry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.repository = gcp.artifactregistry.Repository(
            f"{name}-repository", repository_id=settings.registry, location=settings.region, format="DOCKER",
            description="Weir: the mesh and bookinfo-lite image", opts=child)
        gcp.artifactregistry.RepositoryIamMember(
            f"{name}-nodes-reader", project=settings.project, location=settings.region,
            repository=self.repository.repository_id, role="roles/artifactregistry.reader",
            member=pulumi.Output.from_input(reader).apply(lambda e: f"serviceAccount:{e}"), opts=child)
        self.url = f"{settings.region}-docker.pkg.dev/{settings.project}/{settings.registry}"
        self.register_outputs({"url": self.url})
