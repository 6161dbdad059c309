"""An async client for Rucio's REST API (raw HTTP; the `rucio` package is not imported).

Covers what the data-replication handler needs (replication rules: add, read, list per
DID, delete) and what tests need to build scenarios on an empty server (scopes, RSEs and
their attributes, account limits, datasets, file replicas, replica states). The contract
is the one observed on rucio 41.5.1 (docs/rucio.md and the recipe in
../shared/reference/im-and-rucio-test-peers.md, part 2):

- Auth: `GET /auth/userpass` with account, username and password headers answers with an
  `X-Rucio-Auth-Token` header (valid 1 h). The token is cached, renewed shortly before it
  expires and once more when a call answers 401 `CannotAuthenticate`. Neither the token
  nor the password is ever logged, put in an exception or in `repr` (httpcore's DEBUG
  logs of response headers are filtered for the token).
- Errors carry `ExceptionClass` / `ExceptionMessage` (headers and a JSON body); they are
  mapped onto the exceptions below. 5xx and transport errors are `RucioUnavailable`, the
  only retryable kind; the client never retries by itself (a retried rule creation would
  answer `DuplicateRule`, which the caller must be ready for anyway).
- Rule creation answers a JSON list of ids with `Content-Type: text/html`; lists answer
  `application/x-json-stream` (one JSON object per line); `DELETE /rules/<id>` needs a JSON
  body; a deleted rule stays readable until Rucio's judge-cleaner removes it (soft delete).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
import msgspec

__all__ = [
    "Did",
    "FileReplica",
    "FileReplicaStates",
    "ReplicaLock",
    "ReplicaState",
    "ReplicationRule",
    "RucioClient",
    "RucioDuplicateRule",
    "RucioError",
    "RucioInvalidExpression",
    "RucioNotFound",
    "RucioRejected",
    "RucioUnauthorized",
    "RucioUnavailable",
    "RuleState",
]

T = TypeVar("T")

# A token is renewed when it has less than this left, so no call starts with a token that
# expires on the way.
_TOKEN_RENEW_MARGIN_S = 300.0
_RULE_ID = re.compile(r"^[0-9a-fA-F]{32}$")


# ---------------------------------------------------------------- errors
class RucioError(Exception):
    """A Rucio call failed. `exception_class` is Rucio's own name for it, when it gave one."""

    def __init__(self, message: str, *, status: int | None = None,
                 exception_class: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.exception_class = exception_class

    @property
    def retryable(self) -> bool:
        return False


class RucioNotFound(RucioError):
    """Unknown DID, rule, scope, RSE or account (404)."""


class RucioInvalidExpression(RucioError):
    """The RSE expression is malformed or selects no RSE (409 `InvalidRSEExpression`)."""


class RucioUnauthorized(RucioError):
    """Bad credentials, or the account may not do this (401)."""


class RucioUnavailable(RucioError):
    """Rucio did not answer, or answered 5xx: try again later."""

    @property
    def retryable(self) -> bool:
        return True


class RucioRejected(RucioError):
    """Rucio refused the request for a reason of its own (quota, duplicate, bad input...)."""


class RucioDuplicateRule(RucioRejected):
    """An identical rule (same DID, account, RSE expression) already exists (409)."""


_NOT_FOUND_CLASSES = {"DataIdentifierNotFound", "RuleNotFound", "RSENotFound", "ScopeNotFound",
                      "AccountNotFound", "ReplicaNotFound", "RSEAttributeNotFound"}


# ---------------------------------------------------------------- types
class RuleState(enum.Enum):
    REPLICATING = "REPLICATING"
    OK = "OK"
    STUCK = "STUCK"
    SUSPENDED = "SUSPENDED"
    WAITING_APPROVAL = "WAITING_APPROVAL"
    INJECT = "INJECT"


class ReplicaState(enum.Enum):
    """The replica states a client may set with `PUT /replicas/` (Rucio's one-letter codes)."""

    AVAILABLE = "A"
    UNAVAILABLE = "U"
    COPYING = "C"
    BEING_DELETED = "B"
    BAD = "D"
    TEMPORARY_UNAVAILABLE = "T"


class Did(msgspec.Struct, frozen=True):
    """A data identifier: a file, dataset or container."""

    scope: str
    name: str

    def __str__(self) -> str:
        return f"{self.scope}:{self.name}"


class FileReplica(msgspec.Struct, frozen=True):
    scope: str
    name: str
    bytes: int
    adler32: str


class ReplicationRule(msgspec.Struct, frozen=True):
    """A rule as Rucio reports it. Dates are timezone-aware (UTC)."""

    id: str
    state: RuleState
    scope: str
    name: str
    account: str
    rse_expression: str
    copies: int
    locks_ok_cnt: int
    locks_replicating_cnt: int
    locks_stuck_cnt: int
    did_type: str | None = None
    grouping: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    expires_at: datetime | None = None
    stuck_at: datetime | None = None
    error: str | None = None
    comments: str | None = None
    activity: str | None = None
    child_rule_id: str | None = None

    @property
    def did(self) -> Did:
        return Did(self.scope, self.name)


class FileReplicaStates(msgspec.Struct, frozen=True):
    """One file and the state of its replica on each RSE that has one (issue 6)."""

    scope: str
    name: str
    states: dict[str, str] = msgspec.field(default_factory=dict)


class ReplicaLock(msgspec.Struct, frozen=True):
    """One file of a rule on one RSE."""

    scope: str
    name: str
    rse: str
    state: str
    rule_id: str


class _RuleWire(msgspec.Struct):
    id: str
    state: RuleState
    scope: str
    name: str
    account: str
    rse_expression: str
    copies: int
    locks_ok_cnt: int = 0
    locks_replicating_cnt: int = 0
    locks_stuck_cnt: int = 0
    did_type: str | None = None
    grouping: str | None = None
    created_at: str | None = None  # RFC 1123, e.g. "Mon, 23 Nov 2026 20:12:50 UTC"
    updated_at: str | None = None
    expires_at: str | None = None
    stuck_at: str | None = None
    error: str | None = None
    comments: str | None = None
    activity: str | None = None
    child_rule_id: str | None = None

    def to_rule(self) -> ReplicationRule:
        return ReplicationRule(
            id=self.id, state=self.state, scope=self.scope, name=self.name,
            account=self.account, rse_expression=self.rse_expression, copies=self.copies,
            locks_ok_cnt=self.locks_ok_cnt, locks_replicating_cnt=self.locks_replicating_cnt,
            locks_stuck_cnt=self.locks_stuck_cnt, did_type=self.did_type, grouping=self.grouping,
            created_at=_rucio_time(self.created_at), updated_at=_rucio_time(self.updated_at),
            expires_at=_rucio_time(self.expires_at), stuck_at=_rucio_time(self.stuck_at),
            error=self.error, comments=self.comments, activity=self.activity,
            child_rule_id=self.child_rule_id)


class _RuleRequest(msgspec.Struct, omit_defaults=True):
    dids: Sequence[Did]
    account: str
    copies: int
    rse_expression: str
    grouping: str = "DATASET"
    lifetime: int | None = None
    comment: str | None = None
    activity: str | None = None
    ask_approval: bool = False
    asynchronous: bool = False


class _ReplicaStateChange(msgspec.Struct):
    scope: str
    name: str
    state: str


class _Token(msgspec.Struct):
    value: str
    expires_monotonic: float

    def __repr__(self) -> str:  # never show the token itself
        return "_Token(<hidden>)"


_TOKEN_IN_HEADERS = re.compile(r"(?i)(x-rucio-auth-token['\"]?\s*[,:]\s*b?['\"])[^'\"]+")


class _RedactRucioTokens(logging.Filter):
    """httpcore logs whole response headers at DEBUG, which would show the login answer's
    `X-Rucio-Auth-Token`; this rewrites such records before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "rucio-auth-token" in message.lower():
            record.msg, record.args = _TOKEN_IN_HEADERS.sub(r"\1[redacted]", message), None
        return True


def _guard_http_debug_logs() -> None:
    # Logger filters see only records created by that very logger, hence each by name.
    for name in ("httpcore.http11", "httpcore.http2", "httpx"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactRucioTokens) for f in logger.filters):
            logger.addFilter(_RedactRucioTokens())


def _rucio_time(value: str | None) -> datetime | None:
    return parsedate_to_datetime(value) if value else None


def _q(part: str) -> str:
    """One path segment; Rucio names may contain '/', which must not split the path."""
    return quote(part, safe="")


def _json_lines(body: bytes, item_type: type[T]) -> list[T]:
    return [msgspec.json.decode(line, type=item_type) for line in body.splitlines() if line.strip()]


# ---------------------------------------------------------------- client
class RucioClient:
    """One Rucio server, one account, userpass authentication.

    Use as `async with RucioClient(...) as rucio:` or call `aclose()`. Safe to share
    between tasks: concurrent calls wait for one authentication.
    """

    def __init__(self, base_url: str, *, account: str, username: str, password: str,
                 timeout: float = 30.0, vo: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.account = account
        self._username = username
        self._password = password
        self._vo = vo
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                       transport=transport, follow_redirects=True)
        self._token: _Token | None = None
        self._auth_lock = asyncio.Lock()
        _guard_http_debug_logs()

    def __repr__(self) -> str:
        return f"RucioClient({self.base_url!r}, account={self.account!r})"

    async def __aenter__(self) -> RucioClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------ auth
    async def ping(self) -> str:
        """Rucio's version; needs no authentication."""
        response = await self._send("GET", "/ping")
        return str(msgspec.json.decode(response.content, type=dict[str, Any])["version"])

    async def authenticate(self) -> None:
        """Get a fresh token now (calls do this themselves when needed)."""
        async with self._auth_lock:
            await self._login()

    async def _login(self) -> None:
        headers = {"X-Rucio-Account": self.account, "X-Rucio-Username": self._username,
                   "X-Rucio-Password": self._password}
        if self._vo:
            headers["X-Rucio-VO"] = self._vo
        response = await self._send("GET", "/auth/userpass", headers=headers)
        token = response.headers.get("X-Rucio-Auth-Token")
        if not token:
            raise RucioUnauthorized("Rucio answered the login without a token",
                                    status=response.status_code)
        lifetime = 3600.0
        expires = response.headers.get("X-Rucio-Auth-Token-Expires")
        if expires:
            try:
                lifetime = parsedate_to_datetime(expires).timestamp() - time.time()
            except (TypeError, ValueError):
                pass
        self._token = _Token(token, time.monotonic() + max(lifetime - _TOKEN_RENEW_MARGIN_S, 0.0))

    async def _current_token(self) -> _Token:
        token = self._token
        if token is not None and time.monotonic() < token.expires_monotonic:
            return token
        async with self._auth_lock:
            if self._token is token or self._token is None:  # nobody renewed it meanwhile
                await self._login()
            assert self._token is not None
            return self._token

    async def whoami(self) -> str:
        response = await self._call("GET", "/accounts/whoami")
        return str(msgspec.json.decode(response.content, type=dict[str, Any])["account"])

    # ------------------------------------------------------------ rules
    async def add_replication_rule(
        self, dids: Sequence[Did], *, copies: int, rse_expression: str,
        lifetime: int | None = None, account: str | None = None, grouping: str = "DATASET",
        comment: str | None = None, activity: str | None = None, ask_approval: bool = False,
        asynchronous: bool = False,
    ) -> list[str]:
        """Create one rule per DID; returns the rule ids in the order of `dids`.

        `lifetime` is in seconds (None: no expiry). `account` defaults to the client's.
        Raises RucioNotFound (unknown DID), RucioInvalidExpression, RucioDuplicateRule,
        RucioRejected (e.g. `InsufficientAccountLimit`).
        """
        if not dids:
            raise ValueError("a replication rule needs at least one DID")
        request = _RuleRequest(dids=list(dids), account=account or self.account, copies=copies,
                               rse_expression=rse_expression, grouping=grouping,
                               lifetime=lifetime, comment=comment, activity=activity,
                               ask_approval=ask_approval, asynchronous=asynchronous)
        response = await self._call("POST", "/rules/", body=request)
        # The body is a JSON list although the Content-Type says text/html.
        return msgspec.json.decode(response.content, type=list[str])

    async def get_replication_rule(self, rule_id: str) -> ReplicationRule:
        self._check_rule_id(rule_id)
        response = await self._call("GET", f"/rules/{rule_id}")
        return msgspec.json.decode(response.content, type=_RuleWire).to_rule()

    async def list_did_rules(self, did: Did) -> list[ReplicationRule]:
        """Every rule on this DID (deleted rules stay listed until the judge-cleaner ran)."""
        response = await self._call("GET", f"/dids/{_q(did.scope)}/{_q(did.name)}/rules")
        return [wire.to_rule() for wire in _json_lines(response.content, _RuleWire)]

    async def list_rule_locks(self, rule_id: str) -> list[ReplicaLock]:
        self._check_rule_id(rule_id)
        response = await self._call("GET", f"/rules/{rule_id}/locks")
        return _json_lines(response.content, ReplicaLock)

    async def delete_replication_rule(self, rule_id: str, *, purge_replicas: bool = False) -> None:
        """Ask Rucio to remove the rule. Rucio only sets its expiry to at most one hour
        ahead; the rule stays readable, state unchanged, until the judge-cleaner removes
        it. Deleting an already deleted (but not yet cleaned) rule succeeds again."""
        self._check_rule_id(rule_id)
        # Without a JSON body Rucio answers 400 "cannot decode json parameter dictionary".
        await self._call("DELETE", f"/rules/{rule_id}", body={"purge_replicas": purge_replicas})

    async def list_file_replicas(self, did: Did) -> list[FileReplicaStates]:
        """The files of a DID (itself, for a file) with the RSEs holding an AVAILABLE
        replica of each (`GET /replicas/<scope>/<name>`; issue 6's data locator)."""
        response = await self._call("GET", f"/replicas/{_q(did.scope)}/{_q(did.name)}")
        return _json_lines(response.content, FileReplicaStates)

    async def set_rule_lifetime(self, rule_id: str, seconds: int | None) -> None:
        """Let the rule expire `seconds` from now (None: never)."""
        self._check_rule_id(rule_id)
        await self._call("PUT", f"/rules/{rule_id}", body={"options": {"lifetime": seconds}})

    @staticmethod
    def _check_rule_id(rule_id: str) -> None:
        # Rucio answers 500 "Badly formatted rule id" otherwise, which would look retryable.
        if not _RULE_ID.match(rule_id):
            raise RucioNotFound(f"{rule_id!r} is not a Rucio rule id (32 hex digits)",
                                exception_class="RuleNotFound")

    # ------------------------------------------------------------ scenario set-up
    async def add_scope(self, scope: str, *, account: str | None = None) -> None:
        await self._call("POST", f"/accounts/{_q(account or self.account)}/scopes/{_q(scope)}")

    async def add_rse(self, rse: str, *, deterministic: bool = True, volatile: bool = False,
                      rse_type: Literal["DISK", "TAPE"] = "DISK") -> None:
        await self._call("POST", f"/rses/{_q(rse)}", body={
            "deterministic": deterministic, "volatile": volatile, "rse_type": rse_type})

    async def add_rse_attribute(self, rse: str, key: str, value: str | bool | int) -> None:
        await self._call("POST", f"/rses/{_q(rse)}/attr/{_q(key)}", body={"value": value})

    async def list_rses(self, expression: str) -> list[str]:
        """The RSE names an expression selects (RucioInvalidExpression if none)."""
        response = await self._call("GET", "/rses/", params={"expression": expression})
        return [str(item["rse"]) for item in _json_lines(response.content, dict[str, Any])]

    async def set_local_account_limit(self, rse: str, *, bytes_: int = -1,
                                      account: str | None = None) -> None:
        """Quota of the account on an RSE; -1 is unlimited. A rule needs one on its RSEs."""
        await self._call("POST", f"/accounts/{_q(account or self.account)}/limits/local/{_q(rse)}",
                         body={"bytes": bytes_})

    async def add_did(self, did: Did, *, did_type: Literal["DATASET", "CONTAINER"] = "DATASET",
                      lifetime: int | None = None) -> None:
        await self._call("POST", f"/dids/{_q(did.scope)}/{_q(did.name)}",
                         body={"type": did_type, "lifetime": lifetime})

    async def add_dataset(self, did: Did, *, lifetime: int | None = None) -> None:
        await self.add_did(did, did_type="DATASET", lifetime=lifetime)

    async def add_replicas(self, rse: str, files: Iterable[FileReplica], *,
                           ignore_availability: bool = True) -> None:
        """Register files (creating their DIDs) with an available replica on `rse`."""
        await self._call("POST", "/replicas/", body={
            "rse": rse, "files": list(files), "ignore_availability": ignore_availability})

    async def attach_dids(self, parent: Did, children: Iterable[Did]) -> None:
        await self._call("POST", f"/dids/{_q(parent.scope)}/{_q(parent.name)}/dids",
                         body={"dids": list(children)})

    async def set_replica_states(self, rse: str, files: Iterable[Did], state: ReplicaState) -> None:
        """Set the state of replicas on `rse`. For a rule's lock there this is the end of
        its transfer: AVAILABLE counts as done (the rule may turn OK), UNAVAILABLE as
        failed (the rule turns STUCK)."""
        changes = [_ReplicaStateChange(f.scope, f.name, state.value) for f in files]
        await self._call("PUT", "/replicas/", body={"rse": rse, "files": changes})

    # ------------------------------------------------------------ transport
    async def _call(self, method: str, path: str, *, body: object = None,
                    params: Mapping[str, str] | None = None) -> httpx.Response:
        """An authenticated call; on 401 `CannotAuthenticate` logs in again once and retries."""
        for attempt in (1, 2):
            token = await self._current_token()
            try:
                return await self._send(method, path, body=body, params=params,
                                        headers={"X-Rucio-Auth-Token": token.value})
            except RucioUnauthorized as error:
                if attempt == 2 or error.exception_class != "CannotAuthenticate":
                    raise
                async with self._auth_lock:
                    if self._token is token:  # nobody renewed it meanwhile
                        self._token = None
        raise AssertionError("unreachable")

    async def _send(self, method: str, path: str, *, body: object = None,
                    params: Mapping[str, str] | None = None,
                    headers: dict[str, str] | None = None) -> httpx.Response:
        all_headers = {"Accept": "application/json, application/x-json-stream, */*"}
        all_headers.update(headers or {})
        content = None
        if body is not None:
            content = msgspec.json.encode(body)
            all_headers["Content-Type"] = "application/json"
        try:
            response = await self._http.request(method, path, content=content, params=params,
                                                headers=all_headers)
        except httpx.TransportError as error:
            raise RucioUnavailable(f"Rucio at {self.base_url} did not answer "
                                   f"{method} {path}: {type(error).__name__}") from None
        if response.status_code >= 400:
            raise _error_from(response, method, path)
        return response


def _error_from(response: httpx.Response, method: str, path: str) -> RucioError:
    status = response.status_code
    exception_class = response.headers.get("ExceptionClass")
    message = response.headers.get("ExceptionMessage")
    try:
        decoded = msgspec.json.decode(response.content, type=dict[str, Any])
        exception_class = str(decoded.get("ExceptionClass") or exception_class or "") or None
        message = str(decoded.get("ExceptionMessage") or message or "") or None
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    text = (f"{method} {path}: {status} {exception_class or 'error'}: "
            f"{message or response.reason_phrase}")
    kind: type[RucioError]
    if status >= 500:
        kind = RucioUnavailable
    elif status == 401:
        kind = RucioUnauthorized
    elif status == 404 or exception_class in _NOT_FOUND_CLASSES:
        kind = RucioNotFound
    elif exception_class == "InvalidRSEExpression":
        kind = RucioInvalidExpression
    elif exception_class == "DuplicateRule":
        kind = RucioDuplicateRule
    else:
        kind = RucioRejected
    return kind(text, status=status, exception_class=exception_class)
