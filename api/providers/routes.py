"""The provider endpoints as route handlers, for ``api.app.create_app``."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from api.providers.admin import ProviderAdminController
from api.providers.ports import ProvidersApi
from api.providers.reads import GroupSitesController
from api.providers.security import PROVIDERS

ROUTE_HANDLERS: list[ControllerRouterHandler] = [
    ProviderAdminController, GroupSitesController]


def app_state(providers: ProvidersApi) -> dict[str, object]:
    """What ``create_app`` puts in the application state for the provider controllers."""
    return {PROVIDERS: providers}
