"""Secrets in deployer details (IM VirtualMachineInfo, IAM clients, S3 keys) never leave
through /resources or /extrainfo: they are removed there, and served to the owner only by
GET /deployments/{id}/credentials (legacy weakness 2)."""

from __future__ import annotations

import re
from typing import Any

# Property names that hold a credential: VM SSH keys and passwords
# ("disk.0.os.credentials.private_key"), IAM client registration tokens, S3 / AWS keys.
_SECRET = re.compile(
    r"(private_key|password|passwd|secret|token|access_key|accesskey|api_key|apikey)",
    re.IGNORECASE)
# Not secret in itself, but part of what the owner needs to log in.
_LOGIN = re.compile(r"(username|user_name|login)$", re.IGNORECASE)


def is_secret(name: str) -> bool:
    return bool(_SECRET.search(name))


def redacted(value: Any) -> Any:
    """``value`` without any member whose name says it holds a credential (recursively)."""
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()
                if not (isinstance(k, str) and is_secret(k))}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def credentials(value: Any) -> dict[str, Any]:
    """The credential members (and login names) found anywhere in ``value``, flattened."""
    found: dict[str, Any] = {}

    def walk(item: Any) -> None:
        if isinstance(item, dict):
            for key, member in item.items():
                if isinstance(key, str) and (is_secret(key) or _LOGIN.search(key)) and \
                        not isinstance(member, dict | list):
                    found[key] = member
                else:
                    walk(member)
        elif isinstance(item, list):
            for member in item:
                walk(member)

    walk(value)
    return found
