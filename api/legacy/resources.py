"""Legacy ``/deployments/{id}/resources``: list (paged), filter (bare array), get, and the
start/stop actions on compute nodes. Reads come from the resources view; who may read is
decided on the deployment (404 when it is not visible)."""

from __future__ import annotations

import json
from typing import Annotated

from litestar import Controller, get, post
from litestar.params import JSONBody, QueryParameter

from api.errors import ApiError
from api.legacy import common
from api.legacy.common import ActionRequest
from api.legacy.ports import DeploymentView, ResourceView
from api.legacy.redaction import redacted
from api.legacy.security import (
    DEPENDENCIES,
    AnyRequest,
    Caller,
    Legacy,
    PathId,
    actionable_deployment,
    authenticated,
    readable_deployment,
)
from api.legacy.shapes import (
    JSON_MEDIA_TYPE,
    READ_ERRORS,
    WRITE_ERRORS,
    DeploymentJson,
    ResourceJson,
    ResourcePage,
    base_url,
    deployment_json,
    page_links,
    page_meta,
    resource_json,
)
from domain.deployments import RequestResourceAction, ResourceAction, ResourceNotFound

SORT_KEYS = {
    "createdAt": "created_at", "creationTime": "created_at", "updatedAt": "updated_at",
    "updateTime": "updated_at", "state": "state", "toscaNodeName": "node_name",
    "toscaNodeType": "node_type", "uuid": "id", "id": "id",
}
COMPUTE = "tosca.nodes.Compute"
FILTER_LIMIT = 10_000


class ResourcesController(Controller):
    path = "/deployments/{deployment_id:str}/resources"
    tags = ["resources"]
    guards = [authenticated]
    dependencies = DEPENDENCIES
    security = [{"bearer": []}]

    @get(["/"], operation_id="listResources", responses=READ_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def list_resources(
        self, request: AnyRequest, legacy: Legacy, principal: Caller,
        deployment_id: PathId,
        type_: Annotated[str | None, QueryParameter(
            name="type",
            description="A TOSCA node type; its subtypes match too")] = None,
        page: Annotated[str | None, QueryParameter(name="page")] = None,
        size: Annotated[str | None, QueryParameter(name="size")] = None,
        sort: Annotated[list[str] | None, QueryParameter(name="sort")] = None,
    ) -> ResourcePage:
        """A page of the deployment's resources (one per TOSCA node instance)."""
        deployment = await readable_deployment(legacy, principal, deployment_id)
        order, sort_values = common.parse_sort(sort, SORT_KEYS)
        number, per_page = common.paging(page, size, legacy)
        node_types = sorted(legacy.types.derived_types(type_)) if type_ else None
        rows, total = await legacy.resources.list(
            deployment_id, node_types=node_types, sort=order, offset=number * per_page,
            limit=per_page)
        base = base_url(request, legacy.settings)
        metadata = await _metadata(legacy, deployment, rows)
        meta = page_meta(size=per_page, total=total, page=number)
        return ResourcePage(
            links=page_links(base, f"/deployments/{deployment_id}/resources",
                             [("type", type_)] if type_ else [], page=number, size=per_page,
                             sort=sort_values, total_pages=meta.totalPages),
            content=[resource_json(row, base, metadata.get(row.resource_id, {}))
                     for row in rows],
            page=meta)

    @get(["/filter"], operation_id="filterResources",
         responses=READ_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def filter_resources(
        self, request: AnyRequest, legacy: Legacy, principal: Caller,
        deployment_id: PathId,
        type_: Annotated[str | None, QueryParameter(name="type",
                                      description="A TOSCA node type (required)")] = None,
    ) -> list[ResourceJson]:
        """Every resource of the type or a subtype, as a bare array (no paging)."""
        deployment = await readable_deployment(legacy, principal, deployment_id)
        if not type_ or not type_.strip():
            raise ApiError(400, "type: a TOSCA node type is required")
        rows, _ = await legacy.resources.list(
            deployment_id, node_types=sorted(legacy.types.derived_types(type_.strip())),
            sort=[("created_at", True)], offset=0, limit=FILTER_LIMIT)
        base = base_url(request, legacy.settings)
        metadata = await _metadata(legacy, deployment, rows)
        return [resource_json(row, base, metadata.get(row.resource_id, {})) for row in rows]

    @get(["/{resource_id:str}"], operation_id="getResource",
         responses=READ_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def get_resource(self, request: AnyRequest, legacy: Legacy,
                           principal: Caller, deployment_id: PathId,
                           resource_id: PathId) -> ResourceJson:
        deployment = await readable_deployment(legacy, principal, deployment_id)
        row = await legacy.resources.get(deployment_id, resource_id)
        if row is None:
            raise ApiError(404, f"The resource {resource_id} of deployment {deployment_id} "
                                f"doesn't exist")
        metadata = await _metadata(legacy, deployment, [row])
        return resource_json(row, base_url(request, legacy.settings),
                             metadata.get(row.resource_id, {}))

    @post(["/{resource_id:str}/actions"], operation_id="actOnResource",
          responses=WRITE_ERRORS, status_code=202,
          opt={"mutation": True, "body": True}, media_type=JSON_MEDIA_TYPE)
    async def act(self, request: AnyRequest, legacy: Legacy,
                  principal: Caller, deployment_id: PathId, resource_id: PathId,
                  data: JSONBody[ActionRequest]) -> DeploymentJson:
        """Start or stop a compute node; 202 with the deployment (the node goes
        STARTING/STOPPING, then STARTED/STOPPED as the deployer reports)."""
        try:
            action = ResourceAction((data.type or "").strip().lower())
        except ValueError:
            await readable_deployment(legacy, principal, deployment_id)
            raise ApiError(400, f"Unsupported action type {data.type!r}: use start or stop"
                           ) from None
        await actionable_deployment(legacy, principal, deployment_id, f"resource.{action}")
        row = await legacy.resources.get(deployment_id, resource_id)
        if row is None:
            raise ApiError(400, ResourceNotFound(deployment_id, resource_id).message)
        if not legacy.types.is_derived_from(row.node_type, COMPUTE):
            raise ApiError(400, f"Resource {resource_id} is a {row.node_type}, not a "
                                f"{COMPUTE}: only compute nodes can be started or stopped")
        state = await common.execute(legacy, request, principal, RequestResourceAction(
            deployment_id=deployment_id, actor=common.actor_of(principal),
            actor_is_admin=principal.is_admin, resource_id=resource_id, action=action))
        return deployment_json(common.view_of(state), base_url(request, legacy.settings))


async def _metadata(legacy: Legacy, deployment: DeploymentView,
                    rows: list[ResourceView]) -> dict[str, dict[str, str]]:
    """Per resource: ``VirtualMachineInfo`` (a JSON string, as legacy) with secrets removed."""
    if not any(row.im_vm_id for row in rows):
        return {}
    infos = await legacy.deployer_info.vm_info(deployment)
    found: dict[str, dict[str, str]] = {}
    for row in rows:
        info = infos.get(row.im_vm_id) if row.im_vm_id else None
        if info is not None:
            found[row.resource_id] = {"VirtualMachineInfo": json.dumps(redacted(info))}
    return found
