"""Legacy ``/deployments``: list, create, get, update, reset, delete, template, log,
extrainfo; additive retry, parameters and credentials endpoints.

Reads come from the deployments view only. Writes go through the command service; their
answer is built from the state the command produced, so a client reads its own write
before the projection has caught up.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Annotated, Any

from litestar import Controller, Response, delete, get, patch, post, put
from litestar.params import JSONBody, QueryParameter

from api.auth import Principal
from api.errors import ApiError
from api.legacy import common
from api.legacy.common import DeploymentRequest, ResetRequest
from api.legacy.ports import DeploymentQuery, bearer_token
from api.legacy.redaction import credentials, redacted
from api.legacy.security import (
    DEPENDENCIES,
    AnyRequest,
    Caller,
    Legacy,
    PathId,
    actionable_deployment,
    authenticated,
    is_owner,
    readable_deployment,
)
from api.legacy.shapes import (
    JSON_MEDIA_TYPE,
    READ_ERRORS,
    WRITE_ERRORS,
    DeploymentJson,
    DeploymentPage,
    base_url,
    deployment_json,
    page_links,
    page_meta,
)
from domain.deployments import (
    AlreadyExists,
    CreateDeployment,
    DeleteDeployment,
    DeploymentStatus,
    NotPermitted,
    ResetDeployment,
    RetryDeployment,
    UpdateDeployment,
)

SORT_KEYS = {
    "createdAt": "created_at", "creationTime": "created_at", "creationTimestamp": "created_at",
    "updatedAt": "updated_at", "updateTime": "updated_at", "updateTimestamp": "updated_at",
    "status": "status", "task": "task", "userGroup": "user_group",
    "cloudProviderName": "provider_name", "templateType": "template_type",
    "uuid": "id", "id": "id",
}
"""Public sort keys (JSON names, and the legacy JPA names clients already send)."""

_CREATED_BY = re.compile(r"^([^@]+)@([^@]+)$")
_IDEMPOTENCY_NAMESPACE = uuid.UUID("5d0f8a3e-6c1b-4f57-9a2e-3b8f1c0d7e21")
MUTATION = {"mutation": True, "body": True}


class DeploymentsController(Controller):
    path = "/deployments"
    tags = ["deployments"]
    guards = [authenticated]
    dependencies = DEPENDENCIES
    security = [{"bearer": []}]

    @get(["/"], operation_id="listDeployments", responses=READ_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def list_deployments(
        self, request: AnyRequest, legacy: Legacy, principal: Caller,
        created_by: Annotated[str | None, QueryParameter(
            name="createdBy",
            description="`me` or `<subject>@<issuer>`; default: mine (admins: their issuer's)",
        )] = None,
        user_group: Annotated[str | None, QueryParameter(name="userGroup")] = None,
        excluded_status: Annotated[list[str] | None, QueryParameter(
            name="excludedStatus",
            description="Comma-separated statuses to leave out, e.g. DELETE_COMPLETE")] = None,
        status: Annotated[list[str] | None, QueryParameter(
            name="status", description="Comma-separated statuses to keep")] = None,
        created_after: Annotated[str | None, QueryParameter(name="createdAfter")] = None,
        created_before: Annotated[str | None, QueryParameter(name="createdBefore")] = None,
        provider: Annotated[str | None, QueryParameter(name="provider")] = None,
        template_type: Annotated[str | None, QueryParameter(name="templateType")] = None,
        iaas_type: Annotated[str | None, QueryParameter(name="iaasType")] = None,
        page: Annotated[str | None, QueryParameter(name="page", description="0-based")] = None,
        size: Annotated[str | None, QueryParameter(name="size", description="default 10")] = None,
        sort: Annotated[list[str] | None, QueryParameter(
            name="sort", description="e.g. createdAt,desc (repeatable)")] = None,
    ) -> DeploymentPage:
        """A page of the deployments the caller may list, newest first (legacy paging)."""
        query = _scope(principal, created_by, user_group)
        order, sort_values = common.parse_sort(sort, SORT_KEYS)
        number, per_page = common.paging(page, size, legacy)
        query.statuses = common.parse_statuses(status, "status")
        query.excluded_statuses = common.parse_statuses(excluded_status, "excludedStatus")
        query.created_after = common.parse_time(created_after, "createdAfter")
        query.created_before = common.parse_time(created_before, "createdBefore")
        query.provider = provider or None
        query.template_type = template_type or None
        query.iaas_type = iaas_type.upper() if iaas_type else None
        query.sort = tuple(order)
        query.offset = number * per_page
        query.limit = per_page
        views, total = await legacy.deployments.list(query)
        base = base_url(request, legacy.settings)
        filters = [(name, value) for name, value in (
            ("createdBy", created_by), ("userGroup", user_group),
            ("excludedStatus", ",".join(excluded_status) if excluded_status else None),
            ("status", ",".join(status) if status else None),
            ("createdAfter", created_after), ("createdBefore", created_before),
            ("provider", provider), ("templateType", template_type),
            ("iaasType", iaas_type)) if value]
        meta = page_meta(size=per_page, total=total, page=number)
        return DeploymentPage(
            links=page_links(base, "/deployments", filters, page=number, size=per_page,
                             sort=sort_values, total_pages=meta.totalPages),
            content=[deployment_json(view, base) for view in views], page=meta)

    @post(["/"], operation_id="createDeployment",
          responses=WRITE_ERRORS, status_code=201, opt=MUTATION,
          media_type=JSON_MEDIA_TYPE)
    async def create_deployment(self, request: AnyRequest, legacy: Legacy, principal: Caller,
                                data: JSONBody[DeploymentRequest]) -> DeploymentJson:
        """Validate the TOSCA template offline and ask for a deployment (CREATE_IN_PROGRESS).

        An ``Idempotency-Key`` header makes a repeated request return the same deployment.
        """
        if not data.template or not data.template.strip():
            raise ApiError(400, "template: the TOSCA template is required")
        group = common.create_group(principal, data.userGroup, legacy)
        if data.dataRequirements and not legacy.settings.accepts_data_requirements:  # issue 6
            raise ApiError(400, "dataRequirements: data management is not configured on this "
                                "orchestrator (no Rucio server)")
        parameters = data.parameters or {}
        identity, resources = await common.validated(legacy, data.template, parameters)
        key = request.headers.get("idempotency-key")
        deployment_id = (str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE,
                                        f"{principal.issuer}\n{principal.subject}\n{key}"))
                         if key else legacy.new_id())
        command = CreateDeployment(
            deployment_id=deployment_id, actor=common.actor_of(principal),
            actor_is_admin=principal.is_admin, user_group=group, template=data.template,
            template_identity=identity, requested_resources=resources, parameters=parameters,
            callback=data.callback, timeout_mins=data.timeoutMins,
            provider_timeout_mins=data.providerTimeoutMins,
            max_providers_retry=data.maxProvidersRetry,
            keep_last_attempt=bool(data.keepLastAttempt),
            data_requirements=common.data_requirements(data.dataRequirements))  # issue 6
        base = base_url(request, legacy.settings)
        try:
            state = await common.execute(legacy, request, principal, command)
        except AlreadyExists:
            if not key:
                raise
            existing = await legacy.deployments.get(deployment_id)
            if existing is None:
                raise ApiError(409, "A deployment with this Idempotency-Key is being created; "
                                    "retry shortly", {"Retry-After": "1"}) from None
            return deployment_json(existing, base)
        await _capture_credentials(legacy, request, deployment_id)
        return deployment_json(common.view_of(state), base)

    @get(["/{deployment_id:str}"], operation_id="getDeployment",
         responses=READ_ERRORS, media_type=JSON_MEDIA_TYPE)
    async def get_deployment(self, request: AnyRequest, legacy: Legacy,
                             principal: Caller, deployment_id: PathId) -> DeploymentJson:
        """One deployment (404 when unknown or not visible to the caller)."""
        view = await readable_deployment(legacy, principal, deployment_id)
        return deployment_json(view, base_url(request, legacy.settings))

    @put(["/{deployment_id:str}"], operation_id="updateDeployment",
         responses=WRITE_ERRORS, status_code=202,
         opt=MUTATION, media_type=JSON_MEDIA_TYPE)
    async def update_deployment(self, request: AnyRequest, legacy: Legacy,
                                principal: Caller, deployment_id: PathId,
                                data: JSONBody[DeploymentRequest]) -> DeploymentJson:
        """Update (scale) a deployment: parameters are merged into the stored ones, the new
        template is validated with them; answers 202 with the deployment (UPDATE_IN_PROGRESS).
        """
        await actionable_deployment(legacy, principal, deployment_id, "update")
        if not data.template or not data.template.strip():
            raise ApiError(400, "template: the TOSCA template is required")
        details = await legacy.deployments.details(deployment_id)
        stored = details.parameters if details is not None else {}
        parameters = data.parameters or {}
        identity, resources = await common.validated(legacy, data.template,
                                                     {**stored, **parameters})
        command = UpdateDeployment(
            deployment_id=deployment_id, actor=common.actor_of(principal),
            actor_is_admin=principal.is_admin, template=data.template,
            template_identity=identity, requested_resources=resources, parameters=parameters,
            callback=data.callback, timeout_mins=data.timeoutMins,
            provider_timeout_mins=data.providerTimeoutMins, user_group=data.userGroup)
        state = await common.execute(legacy, request, principal, command)
        await _capture_credentials(legacy, request, deployment_id)
        return deployment_json(common.view_of(state), base_url(request, legacy.settings))

    @patch(["/{deployment_id:str}"], operation_id="resetDeployment",
           responses=WRITE_ERRORS, status_code=204,
           opt=MUTATION)
    async def reset_deployment(self, request: AnyRequest, legacy: Legacy,
                               principal: Caller, deployment_id: PathId,
                               data: JSONBody[ResetRequest]) -> None:
        """Reset a stuck operation: ``DELETE_FAILED`` from DELETE_IN_PROGRESS (legacy), and
        ``CREATE_FAILED`` / ``UPDATE_FAILED`` from the matching ``*_IN_PROGRESS``."""
        await actionable_deployment(legacy, principal, deployment_id, "reset")
        if not data.status:
            raise ApiError(400, "status: the status to reset to is required, e.g. DELETE_FAILED")
        try:
            target = DeploymentStatus(data.status.strip().upper())
        except ValueError:
            raise ApiError(400, f"Value {data.status} for status is not a deployment status"
                           ) from None
        await common.execute(legacy, request, principal, ResetDeployment(
            deployment_id=deployment_id, actor=common.actor_of(principal),
            actor_is_admin=principal.is_admin, status=target), reason="reset")

    @delete(["/{deployment_id:str}"], operation_id="deleteDeployment",
            responses=WRITE_ERRORS, status_code=204,
            opt={"mutation": True})
    async def delete_deployment(
        self, request: AnyRequest, legacy: Legacy, principal: Caller,
        deployment_id: PathId,
        force: Annotated[str | None, QueryParameter(
            name="force",
            description="`true` (any case) skips cleanup errors at the deployer")] = None,
    ) -> None:
        """Delete a deployment (DELETE_IN_PROGRESS, then the DELETE_COMPLETE tombstone).
        A request body is ignored (the dashboard sends one)."""
        await actionable_deployment(legacy, principal, deployment_id, "delete")
        await common.execute(legacy, request, principal, DeleteDeployment(
            deployment_id=deployment_id, actor=common.actor_of(principal),
            actor_is_admin=principal.is_admin,
            force=(force or "").strip().lower() == "true"))
        await _capture_credentials(legacy, request, deployment_id)

    @post(["/{deployment_id:str}/retry"], operation_id="retryDeployment",
          responses=WRITE_ERRORS, status_code=202,
          opt={"mutation": True}, media_type=JSON_MEDIA_TYPE)
    async def retry_deployment(self, request: AnyRequest, legacy: Legacy,
                               principal: Caller, deployment_id: PathId) -> DeploymentJson:
        """Run a CREATE_FAILED deployment again, same template and inputs, same id (additive)."""
        await actionable_deployment(legacy, principal, deployment_id, "retry")
        state = await common.execute(legacy, request, principal, RetryDeployment(
            deployment_id=deployment_id, actor=common.actor_of(principal),
            actor_is_admin=principal.is_admin))
        await _capture_credentials(legacy, request, deployment_id)
        return deployment_json(common.view_of(state), base_url(request, legacy.settings))

    @get(["/{deployment_id:str}/template"], operation_id="getDeploymentTemplate",
         responses=READ_ERRORS,
         media_type="text/plain")
    async def get_template(self, request: AnyRequest, legacy: Legacy,
                           principal: Caller, deployment_id: PathId) -> Response[str]:
        """The TOSCA template exactly as last submitted (raw text, never JSON-quoted)."""
        await readable_deployment(legacy, principal, deployment_id)
        details = await legacy.deployments.details(deployment_id)
        return common.text_response(request, details.template if details else "")

    @get(["/{deployment_id:str}/log"], operation_id="getDeploymentLog",
         responses=READ_ERRORS, media_type="text/plain")
    async def get_log(self, request: AnyRequest, legacy: Legacy,
                      principal: Caller, deployment_id: PathId) -> Response[str]:
        """The deployer's contextualisation log (raw text; the failure reason when there is
        none yet; empty otherwise). Owner or admin."""
        view = await actionable_deployment(legacy, principal, deployment_id, "log")
        details = await legacy.deployments.details(deployment_id)
        log = details.log if details is not None else None
        return common.text_response(request, log or view.status_reason or "")

    @get(["/{deployment_id:str}/extrainfo"], operation_id="getDeploymentExtraInfo",
         responses=READ_ERRORS,
         media_type="text/plain")
    async def get_extra_info(self, request: AnyRequest, legacy: Legacy,
                             principal: Caller, deployment_id: PathId) -> Response[str]:
        """A JSON array (as text) with one VirtualMachineInfo per VM, secrets removed; ``[]``
        when there is none. Owner or admin."""
        view = await actionable_deployment(legacy, principal, deployment_id, "extrainfo")
        infos = await legacy.deployer_info.vm_info(view)
        body = json.dumps([redacted(infos[vm]) for vm in sorted(infos)])
        return common.text_response(request, body)

    @get(["/{deployment_id:str}/parameters"], operation_id="getDeploymentParameters",
         responses=READ_ERRORS,
         media_type=JSON_MEDIA_TYPE)
    async def get_parameters(self, legacy: Legacy, principal: Caller,
                             deployment_id: PathId) -> dict[str, Any]:
        """The stored TOSCA inputs after every update's merge (additive). Owner or admin."""
        await actionable_deployment(legacy, principal, deployment_id, "parameters")
        details = await legacy.deployments.details(deployment_id)
        return details.parameters if details is not None else {}

    @get(["/{deployment_id:str}/credentials"], operation_id="getDeploymentCredentials",
         responses=READ_ERRORS,
         media_type=JSON_MEDIA_TYPE)
    async def get_credentials(self, legacy: Legacy, principal: Caller,
                              deployment_id: PathId) -> dict[str, Any]:
        """The VM credentials redacted from /resources and /extrainfo. Owner only."""
        view = await readable_deployment(legacy, principal, deployment_id)
        if not is_owner(principal, view):
            raise ApiError(403, NotPermitted().message)
        infos = await legacy.deployer_info.vm_info(view)
        return {"uuid": view.id,
                "vms": [{"vmId": vm, "credentials": credentials(infos[vm])}
                        for vm in sorted(infos)]}


async def _capture_credentials(legacy: Legacy, request: AnyRequest, deployment_id: str) -> None:
    """The accepted command's work may run long: keep the caller's token for it (encrypted,
    never in the log; see api.legacy.ports.CredentialSink)."""
    token = bearer_token(request.headers.get("authorization"))
    if token is not None:
        await legacy.credential_sink.capture(deployment_id, token)


def _scope(principal: Principal, created_by: str | None,
           user_group: str | None) -> DeploymentQuery:
    """Which deployments a list may return (legacy visibility rules, section 2)."""
    mine = DeploymentQuery(owner_issuer=principal.issuer, owner_subject=principal.subject)
    if user_group is not None and not principal.is_admin:
        common.checked_group(principal, user_group)
    query = mine
    if not created_by:
        # Legacy: an admin lists the whole issuer, anyone else their own (group visibility
        # opens reads by id to group members, not other people's lists).
        if principal.is_admin:
            query = DeploymentQuery(owner_issuer=principal.issuer, include_unowned=True)
    elif created_by != "me":
        match = _CREATED_BY.match(created_by)
        if match is None:
            raise ApiError(400, f"Value {created_by} for param createdBy is illegal")
        subject, issuer = match.groups()
        if (issuer, subject) != (principal.issuer, principal.subject):
            if not (principal.is_admin and issuer == principal.issuer):
                raise ApiError(403, f"Only admin can retrieve deployments for {created_by}")
            query = DeploymentQuery(owner_issuer=issuer, owner_subject=subject)
    query.user_group = user_group
    return query
