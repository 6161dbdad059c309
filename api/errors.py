"""Every error leaves the API as the legacy body {code, title, message}.

orchent decides success by the body, not the status: an error without
title/message would be reported as success. No stack trace, no server path.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, TypeAlias

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from api.auth import AuthenticationError, InsufficientScopeError
from domain.deployments import (
    AlreadyExists,
    DeploymentError,
    DeploymentNotFound,
    InvalidRequest,
    InvalidTransition,
    NotPermitted,
    ResourceNotFound,
)
from eventstore.records import ConcurrencyError

log = logging.getLogger("orchestrator.api")

AnyRequest: TypeAlias = Request[Any, Any, Any]
ErrorResponse: TypeAlias = Response[dict[str, object]]


class ApiError(Exception):
    """Raised by controllers for a deliberate error answer."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# Legacy JSON: application/json;charset=UTF-8 (orchent and the dashboard parse either).
JSON_MEDIA_TYPE = "application/json;charset=UTF-8"

CONCURRENT_UPDATE = ("The request couldn't be fulfilled because of a concurrent update. "
                     "Please retry later")


def error_body(status: int, message: str | None) -> dict[str, object]:
    # orchent only sees an error when title/message are non-empty: never leave one out.
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return {"code": status, "title": title, "message": message or title}


def error_response(status: int, message: str | None,
                   headers: dict[str, str] | None = None) -> ErrorResponse:
    return Response(error_body(status, message), status_code=status, headers=headers,
                    media_type=JSON_MEDIA_TYPE)


def _validation_message(error: ValidationException) -> str:
    extra = error.extra
    if isinstance(extra, list) and extra:
        parts = []
        for item in extra:
            if isinstance(item, dict):
                key = item.get("key")
                parts.append(f"{key}: {item.get('message')}" if key else str(item.get("message")))
        if parts:
            return "; ".join(parts)
    return str(error.detail)


def handle_api_error(_: AnyRequest, error: ApiError) -> ErrorResponse:
    return error_response(error.status, error.message, error.headers)


def handle_http_exception(request: AnyRequest, error: HTTPException) -> ErrorResponse:
    status = error.status_code
    if isinstance(error, ValidationException):
        return error_response(400, _validation_message(error))
    if status == 404 and error.detail in ("Not Found", "", None):
        message = f"No handler found for {request.method} {request.url.path}"
    elif status == 405:
        message = f"Request method '{request.method}' is not supported"
    else:
        message = str(error.detail) if error.detail else ""
    return error_response(status, message, dict(error.headers or {}))


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def handle_authentication_error(_: AnyRequest, error: AuthenticationError) -> ErrorResponse:
    """401 in the legacy shape, with the RFC 6750 challenge Spring OAuth2 sent."""
    challenge = 'Bearer realm="oauth"'
    if error.message != "Full authentication is required to access this resource":
        challenge += f', error="invalid_token", error_description="{_quoted(error.message)}"'
    return error_response(401, error.message, {"WWW-Authenticate": challenge})


def handle_insufficient_scope(_: AnyRequest, error: InsufficientScopeError) -> ErrorResponse:
    scope = " ".join(error.required)
    challenge = (f'Bearer realm="oauth", error="insufficient_scope", '
                 f'error_description="Insufficient scope for this resource", scope="{scope}"')
    return error_response(403, error.message, {"WWW-Authenticate": challenge})


def deployment_error_status(error: DeploymentError) -> int:
    """HTTP status of a domain refusal (mapping suggested by domain/deployments/errors.py)."""
    if isinstance(error, DeploymentNotFound):
        return 404
    if isinstance(error, NotPermitted):
        return 403
    if isinstance(error, InvalidRequest | ResourceNotFound):
        return 400
    if isinstance(error, AlreadyExists | InvalidTransition):
        return 409
    return 400


def handle_deployment_error(_: AnyRequest, error: DeploymentError) -> ErrorResponse:
    return error_response(deployment_error_status(error), error.message)


def handle_concurrency_error(_: AnyRequest, __: ConcurrencyError) -> ErrorResponse:
    """Another command on the same deployment got in first: legacy 409 with Retry-After: 0."""
    return error_response(409, CONCURRENT_UPDATE, {"Retry-After": "0"})


def handle_unexpected(request: AnyRequest, error: Exception) -> ErrorResponse:
    log.error("unhandled error", exc_info=error,
              extra={"method": request.method, "path": request.url.path})
    return error_response(500, "The server could not complete the request; it has been logged")


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    AuthenticationError: handle_authentication_error,
    InsufficientScopeError: handle_insufficient_scope,
    DeploymentError: handle_deployment_error,
    ConcurrencyError: handle_concurrency_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
