"""Every error leaves the API as the legacy body {code, title, message}.

orchent decides success by the body, not the status: an error without
title/message would be reported as success. No stack trace, no server path.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

log = logging.getLogger("orchestrator.api")


class ApiError(Exception):
    """Raised by controllers for a deliberate error answer."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_body(status: int, message: str | None) -> dict[str, object]:
    body: dict[str, object] = {"code": status, "title": HTTPStatus(status).phrase}
    if message:
        body["message"] = message
    return body


def error_response(status: int, message: str | None,
                   headers: dict[str, str] | None = None) -> Response[dict[str, object]]:
    return Response(error_body(status, message), status_code=status, headers=headers,
                    media_type=MediaType.JSON)


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


def handle_api_error(_: Request, error: ApiError) -> Response[dict[str, object]]:
    return error_response(error.status, error.message, error.headers)


def handle_http_exception(request: Request, error: HTTPException) -> Response[dict[str, object]]:
    status = error.status_code
    if isinstance(error, ValidationException):
        return error_response(400, _validation_message(error))
    if status == 404 and error.detail in ("Not Found", "", None):
        message = f"No handler found for {request.method} {request.url.path}"
    elif status == 405:
        message = f"Request method '{request.method}' is not supported"
    else:
        message = str(error.detail) if error.detail else None
    return error_response(status, message, dict(error.headers or {}))


def handle_unexpected(request: Request, error: Exception) -> Response[dict[str, object]]:
    log.error("unhandled error", exc_info=error,
              extra={"method": request.method, "path": request.url.path})
    return error_response(500, "The server could not complete the request; it has been logged")


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
