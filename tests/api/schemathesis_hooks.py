"""Schemathesis hooks for tests/api/test_api_fuzz.py (loaded with SCHEMATHESIS_HOOKS).

``legacy_error_shape``: every error answer is the legacy body orchent can see,
``{"code": <status>, "title": <reason phrase>, "message": <text>}``.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.check
def legacy_error_shape(ctx: Any, response: Any, case: Any) -> None:
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} without a JSON body") from None
    if not isinstance(body, dict):
        raise AssertionError(f"{response.status_code} body is not an object")
    if body.get("code") != response.status_code:
        raise AssertionError(f"code {body.get('code')!r} != status {response.status_code}")
    if not isinstance(body.get("title"), str) or not body["title"]:
        raise AssertionError("error body without a title")
    if not isinstance(body.get("message"), str) or not body["message"]:
        raise AssertionError("error body without a message")
    extra = set(body) - {"code", "title", "message"}
    if extra:
        raise AssertionError(f"error body with extra members {sorted(extra)}")
    return None
