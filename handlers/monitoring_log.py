"""The log lines INFN's monitoring parses (reference/legacy-orchestrator-api.md 8.4).

paas-mon (``datasetcollector/loganalyzer.py`` and the template-parser) rebuilds deployment
lifecycles from free-text lines the Java orchestrator logged. This handler emits the same
lines from the deployment events, on the logger ``orchestrator.monitoring``:

- ``deployment.requested`` ->
  ``Creating deployment with template\\n<template>`` then
  ``{"uuid":…,"user_group":…,"user_parameters":{…}}`` (two records, as the Java server
  logged them; parameters whose name says password/secret/token/credential/private are
  replaced by ``"[redacted]"``);
- ``deployment.attempt_started`` (IM deployments) ->
  ``Submission of deployment request to the IM. {"uuid","deployment_type","provider_name",
  "provider_region","user_group"}``;
- ``deployment.completed`` -> ``Deployment completed successfully. {"uuid","status"}``;
- ``deployment.failed`` / ``deployment.deletion_failed`` ->
  ``Deployment in error. {"uuid","status","status_reason"}``.

The JSON fragments are compact (no spaces), keys in the legacy order, as Jackson wrote them.
Two documented differences: ``status`` is the real status (the Java server wrote
CREATE_FAILED for every failed task, deletions and updates included) and
``UPDATE_COMPLETE`` is reported too. With JSON logging (orchestrator/logs.py) the line is
the record's ``message``; the record also carries ``monitoring_event`` (the line's kind) and
``monitoring`` (the fragment as an object) for consumers that read JSON directly.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Container
from typing import Any

from domain.deployments import (
    DeploymentAttemptStarted,
    DeploymentCompleted,
    DeploymentDeletionFailed,
    DeploymentFailed,
    DeploymentProvider,
    DeploymentRequested,
    DeploymentState,
    fold,
)
from eventstore.records import RecordedEvent
from eventstore.registry import EventRegistry
from eventstore.store import EventStore

MONITORING_LOGGER = "orchestrator.monitoring"
log = logging.getLogger(MONITORING_LOGGER)

CREATING = "Creating deployment with template"
SUBMISSION = "Submission of deployment request to the IM."
COMPLETED = "Deployment completed successfully."
IN_ERROR = "Deployment in error."

_SECRET_NAME = re.compile(r"(?i)password|passwd|secret|token|credential|private")
REDACTED = "[redacted]"


def fragment(values: dict[str, Any]) -> str:
    """Compact JSON, insertion order kept, non-ASCII as is (as Jackson wrote it)."""
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False, default=str)


def redacted_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Sorted by name: the stored order is not the submitted one (JSONB)."""
    return {name: (REDACTED if _SECRET_NAME.search(name) else parameters[name])
            for name in sorted(parameters)}


class MonitoringLog:
    """Emits the monitoring lines for deployment events (idempotence: the handler inbox;
    a crash between the line and the inbox record repeats a line, which the parsers
    tolerate as they key rows by uuid)."""

    NAME = "monitoring-log"
    HANDLES: Container[str] = frozenset({
        "deployment.requested", "deployment.attempt_started", "deployment.completed",
        "deployment.failed", "deployment.deletion_failed"})

    def __init__(self, store: EventStore, registry: EventRegistry,
                 logger: logging.Logger | None = None) -> None:
        self.store = store
        self.registry = registry
        self.log = logger or log

    def _emit(self, kind: str, line: str, values: dict[str, Any] | None = None) -> None:
        self.log.info("%s", line, extra={"monitoring_event": kind,
                                         **({"monitoring": values} if values else {})})

    async def _state_as_of(self, event: RecordedEvent) -> DeploymentState:
        recorded = await self.store.read_stream(event.stream_id, to_version=event.version)
        return fold(self.registry.decode_recorded(r) for r in recorded)  # type: ignore[misc]

    async def handle(self, event: RecordedEvent, decoded: Any) -> None:
        match decoded:
            case DeploymentRequested():
                self._emit("template", f"{CREATING}\n{decoded.template}")
                values = {"uuid": decoded.deployment_id, "user_group": decoded.user_group,
                          "user_parameters": redacted_parameters(dict(decoded.parameters))}
                self._emit("requested", fragment(values), values)
            case DeploymentAttemptStarted():
                if decoded.deployment_provider != DeploymentProvider.IM:
                    return
                state = await self._state_as_of(event)
                identity = state.template_identity
                values = {"uuid": decoded.deployment_id,
                          "deployment_type": identity.type if identity else None,
                          "provider_name": decoded.site.provider_name,
                          "provider_region": decoded.site.region,
                          "user_group": state.user_group}
                self._emit("submitted", f"{SUBMISSION} {fragment(values)}", values)
            case DeploymentCompleted():
                values = {"uuid": decoded.deployment_id, "status": decoded.status.value}
                self._emit("completed", f"{COMPLETED} {fragment(values)}", values)
            case DeploymentFailed():
                values = {"uuid": decoded.deployment_id, "status": decoded.status.value,
                          "status_reason": decoded.reason}
                self._emit("failed", f"{IN_ERROR} {fragment(values)}", values)
            case DeploymentDeletionFailed():
                values = {"uuid": decoded.deployment_id, "status": "DELETE_FAILED",
                          "status_reason": decoded.reason}
                self._emit("failed", f"{IN_ERROR} {fragment(values)}", values)
