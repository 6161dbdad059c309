"""The legacy surface as route handlers, for ``api.app.create_app``."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from api.legacy.deployments import DeploymentsController
from api.legacy.generic import GenericController, SchedulesController
from api.legacy.ports import LegacyApi
from api.legacy.resources import ResourcesController
from api.legacy.security import LEGACY

ROUTE_HANDLERS: list[ControllerRouterHandler] = [
    GenericController, DeploymentsController, ResourcesController, SchedulesController]


def app_state(legacy: LegacyApi) -> dict[str, object]:
    """What ``create_app`` puts in the application state for the legacy controllers."""
    return {LEGACY: legacy}
