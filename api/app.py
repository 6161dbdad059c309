"""The Litestar application, built from dependencies the bootstrap passes in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ControllerRouterHandler

from api.errors import EXCEPTION_HANDLERS
from api.operations import Operations, OperationsController

MAX_BODY_BYTES = 2 * 1024 * 1024
"""Larger request bodies are a 413 (a TOSCA template is limited to 256 KB anyway)."""


@dataclass
class ApiDependencies:
    """Everything the controllers may use; nothing is imported behind their back.

    ``extra`` values become Litestar dependencies by name; ``state`` goes into the
    application state (read by guards, which run before dependencies are resolved).
    """

    operations: Operations
    extra: dict[str, Any] = field(default_factory=dict)
    route_handlers: list[ControllerRouterHandler] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


def create_app(deps: ApiDependencies, *, base_path: str = "", debug: bool = False) -> Litestar:
    dependencies = {"operations": Provide(lambda: deps.operations, sync_to_thread=False)}
    for name, value in deps.extra.items():
        dependencies[name] = Provide(_constant(value), sync_to_thread=False)
    handlers: list[ControllerRouterHandler] = [OperationsController, *deps.route_handlers]
    routes: list[ControllerRouterHandler] = (
        [Router(path=base_path, route_handlers=handlers)] if base_path else handlers)
    return Litestar(
        route_handlers=routes,
        dependencies=dependencies,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        state=State(deps.state),
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=OpenAPIConfig(
            title="PaaS Orchestrator", version="1.0.0",
            description="Event-sourced PaaS orchestrator, compatible with the INDIGO PaaS "
                        "Orchestrator REST API (orchent, INFN Cloud dashboard). Every error "
                        "is `{code, title, message}`.",
            path=f"{base_path}/openapi",
            components=Components(security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT",
                                         description="An access token of a trusted OIDC "
                                                     "issuer")})),
        debug=debug,
        logging_config=None,  # orchestrator.logs owns logging: JSON lines
    )


def _constant(value: Any) -> Any:
    def provide() -> Any:
        return value

    return provide
