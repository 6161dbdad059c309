"""An async client for the Infrastructure Manager (IM) REST API, as IM 2.0.0 speaks it.

The contract was observed on a real IM 2.0.0 (../shared/reference/im-and-rucio-test-peers.md,
part 1) and is exercised by tests/im/ against one started by scripts/services.sh.

- One client per IM endpoint; the `Authorization` header is per call, because it carries the
  credentials of the user and of the site the deployment goes to (`build_authorization`).
  The header is wrapped in `ImAuthorization`, whose repr hides it; nothing here logs it.
- Errors: `ImUnauthorized` (401/403, and IM's 400 "Invalid InfrastructureManager credentials"
  on property reads), `ImNotFound` (404), `ImRejected` (other 4xx, with IM's message minus the
  server stack trace it appends), `ImUnavailable` (5xx, connection errors, timeouts: retryable).
- IM 2.0.0 can answer 200 to DELETE and keep (or bring back) the infrastructure (pitfall 1):
  `destroy` deletes, waits until IM answers 404 and no longer lists it, and deletes again, a
  bounded number of times; it also waits out IM's 409 while VMs are still being created.
- IM does not reliably validate templates (pitfall 2 also follows a lost delete): validate
  before sending. Never send a template that enables contextualization (pitfall 3).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar

import httpx
import msgspec

log = logging.getLogger("orchestrator.im")

DEFAULT_IM_URL = "http://127.0.0.1:18899"
IM_URL_ENV = "ORCH_IM_URL"

# IM splits the header into lines on these two characters (backslash, n) ...
AUTH_LINE_SEPARATOR = "\\n"
# ... after turning backslash, backslash, n into a real newline (a value's own newline).
_VALUE_NEWLINE = "\\\\n"
_MAX_MESSAGE = 2000
_T = TypeVar("_T")


# ---------------------------------------------------------------- errors
class ImError(Exception):
    """Any failure talking to IM.

    `message` is IM's own message (or what went wrong, when IM did not answer), `status`
    IM's HTTP status (None: no answer), `operation` what the client was doing.
    """

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, status: int | None = None, operation: str = "") -> None:
        answered = f"IM answered {status}: " if status is not None else ""
        super().__init__(f"{operation}: {answered}{message}" if operation else message)
        self.message = message
        self.status = status
        self.operation = operation


class ImUnauthorized(ImError):
    """IM refused the credentials (401), or they do not grant access to this resource (403)."""


class ImNotFound(ImError):
    """No such infrastructure or VM for these credentials (404)."""


class ImRejected(ImError):
    """IM refused the request (4xx): bad template, wrong state, unsupported media type..."""


class ImUnavailable(ImError):
    """IM did not answer, or answered 5xx: try again later."""

    retryable: ClassVar[bool] = True


class ImDeleteNotConfirmed(ImError):
    """IM kept answering for an infrastructure it was told to delete (pitfall 1)."""

    retryable: ClassVar[bool] = True


# ---------------------------------------------------------------- authorization
class ImCredentials(msgspec.Struct, frozen=True, kw_only=True):
    """The IM line: username/password (IM's USER_DB) or an OIDC access token."""

    username: str | None = None
    password: str | None = None
    token: str | None = None
    id: str = "im"

    def fields(self) -> dict[str, str | None]:
        if self.token is not None:
            return {"id": self.id, "type": "InfrastructureManager", "token": self.token}
        if self.username is None or self.password is None:
            raise ValueError("IM credentials need a token, or a username and a password")
        return {
            "id": self.id,
            "type": "InfrastructureManager",
            "username": self.username,
            "password": self.password,
        }


class _CloudLine(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """A cloud line of the header; `kind` tags it in provider configuration (JSON)."""


class OpenStackOidcCredentials(_CloudLine, frozen=True, tag="openstack"):
    """An OpenStack site reached with the user's OIDC access token (Keystone federation).

    Field names follow the legacy orchestrator's `ImClientFactory`: IM's `username` is the
    identity provider's name in Keystone, `tenant` the federation protocol, `password` the
    access token, `domain` the project.
    """

    id: str
    host: str
    identity_provider: str
    access_token: str
    project: str | None = None
    protocol: str = "openid"
    region: str | None = None
    auth_version: str = "3.x_oidc_access_token"
    extra: dict[str, str] = {}

    def fields(self) -> dict[str, str | None]:
        return {
            "id": self.id,
            "type": "OpenStack",
            "host": self.host,
            "username": self.identity_provider,
            "tenant": self.protocol,
            "password": self.access_token,
            "auth_version": self.auth_version,
            "domain": self.project,
            "service_region": self.region,
            **self.extra,
        }


class KubernetesCredentials(_CloudLine, frozen=True, tag="kubernetes"):
    """A Kubernetes cluster reached with a bearer token."""

    id: str
    host: str
    token: str
    namespace: str | None = None
    extra: dict[str, str] = {}

    def fields(self) -> dict[str, str | None]:
        return {
            "id": self.id,
            "type": "Kubernetes",
            "host": self.host,
            "token": self.token,
            "namespace": self.namespace,
            **self.extra,
        }


class DummyCredentials(_CloudLine, frozen=True, tag="dummy"):
    """IM's Dummy connector: fake VMs, no cloud (tests)."""

    id: str = "dummy"

    def fields(self) -> dict[str, str | None]:
        return {"id": self.id, "type": "Dummy"}


class GenericCredentials(_CloudLine, frozen=True, tag="generic"):
    """Any other IM connector line, field by field (`type` is IM's connector name)."""

    id: str
    type: str
    values: dict[str, str] = {}

    def fields(self) -> dict[str, str | None]:
        return {"id": self.id, "type": self.type, **self.values}


CloudCredentials = (
    OpenStackOidcCredentials | KubernetesCredentials | DummyCredentials | GenericCredentials
)


class ImAuthorization:
    """The value of IM's `Authorization` header. Its repr and str never show it."""

    __slots__ = ("_header",)

    def __init__(self, header: str) -> None:
        self._header = header

    @property
    def header(self) -> str:
        return self._header

    def __repr__(self) -> str:
        return "ImAuthorization(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImAuthorization) and other._header == self._header

    def __hash__(self) -> int:
        return hash(self._header)


_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def _quote(key: str, value: str) -> str:
    """One value as IM's parser (`Authentication.split_line`) reads it back unchanged."""
    if not value.isascii() or any(ord(c) < 32 and c != "\n" for c in value) or "\x7f" in value:
        raise ValueError(f"auth field {key!r}: only printable ASCII (and newlines) is allowed")
    # IM turns these two characters into a line break whatever the quoting, and a value
    # ending in a backslash would glue itself to the next separator.
    if "\\n" in value or value.endswith("\\"):
        raise ValueError(f"auth field {key!r}: a backslash before 'n' or at the end is not allowed")
    # IM reads a value `file(<path>)` as "the contents of that file on the IM server".
    if value.strip().startswith("file(") and value.strip().endswith(")"):
        raise ValueError(f"auth field {key!r}: a value of the form file(...) is not allowed")
    if value != value.strip():
        raise ValueError(f"auth field {key!r}: IM strips leading and trailing blanks")
    value = value.replace("\n", _VALUE_NEWLINE)
    if value and not re.search(r"""[;="'\s]""", value):
        return value
    # Quote with single quotes; a single quote itself goes in double quotes (IM concatenates).
    return "'" + value.replace("'", "'\"'\"'") + "'"


def auth_line(fields: Mapping[str, str | None]) -> str:
    """One line of IM's auth data, `key = value; ...`; fields whose value is None are left out."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        if not _KEY_RE.match(key):
            raise ValueError(f"invalid auth field name {key!r}")
        parts.append(f"{key} = {_quote(key, value)}")
    return "; ".join(parts)


def build_authorization(
    im: ImCredentials, clouds: Iterable[CloudCredentials] = ()
) -> ImAuthorization:
    """The `Authorization` header: the IM line, then one line per cloud, joined by `\\n`."""
    lines = [auth_line(im.fields())]
    lines.extend(auth_line(cloud.fields()) for cloud in clouds)
    return ImAuthorization(AUTH_LINE_SEPARATOR.join(lines))


# ---------------------------------------------------------------- responses
# States IM reports for an infrastructure or a VM.
ImState = Literal[
    "pending", "running", "configured", "unconfigured", "stopped", "off", "failed", "unknown",
    "deleting",
]
FINAL_STATES = frozenset({"configured", "unconfigured", "failed"})


class InfrastructureState(msgspec.Struct, frozen=True):
    state: str
    vm_states: dict[str, str] = {}


class VmInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A VM as IM describes it: its RADL, as JSON (`network` and `system` items).

    The system item may hold credentials (`disk.0.os.credentials.*`): redact before storing
    or serving it.
    """

    vm_id: str
    radl: list[dict[str, Any]]

    @property
    def system(self) -> dict[str, Any]:
        return next((item for item in self.radl if item.get("class") == "system"), {})

    @property
    def state(self) -> str | None:
        value = self.system.get("state")
        return value if isinstance(value, str) else None

    @property
    def node_name(self) -> str | None:
        """The TOSCA node (RADL system id) this VM implements."""
        value = self.system.get("id")
        return value if isinstance(value, str) else None

    @property
    def ips(self) -> list[str]:
        system = self.system
        found = []
        for index in range(64):
            key = f"net_interface.{index}.ip"
            if key not in system and f"net_interface.{index}.connection" not in system:
                break
            if isinstance(system.get(key), str):
                found.append(system[key])
        return found


class DeleteResult(msgspec.Struct, frozen=True, kw_only=True):
    """How a `destroy` went: DELETE calls made and whether IM had already forgotten it."""

    deletes: int
    already_gone: bool


class _Uri(msgspec.Struct):
    uri: str


class _UriList(msgspec.Struct):
    uri_list: list[_Uri] = msgspec.field(default_factory=list, name="uri-list")


class _StateBody(msgspec.Struct):
    state: InfrastructureState


class _VmStateBody(msgspec.Struct):
    state: str


class _OutputsBody(msgspec.Struct):
    outputs: dict[str, Any] = {}


class _ContmsgBody(msgspec.Struct):
    contmsg: str = ""


class _RadlBody(msgspec.Struct):
    radl: list[dict[str, Any]] = []


class _ToscaBody(msgspec.Struct):
    tosca: str = ""


def _last_segment(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _clean_message(text: str) -> str:
    """IM's error text without the server stack trace (lines indented by two tabs)."""
    lines = [line.rstrip() for line in text.splitlines() if not line.startswith("\t\t")]
    cleaned = "\n".join(line for line in lines if line.strip()).strip()
    return cleaned[:_MAX_MESSAGE]


def _error_message(response: httpx.Response) -> str:
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return _clean_message(response.text) or response.reason_phrase
    if isinstance(body, dict):
        if isinstance(body.get("message"), str):
            return _clean_message(body["message"])
        if "detail" in body:  # FastAPI's own validation errors
            detail = body["detail"]
            return _clean_message(detail if isinstance(detail, str) else str(detail))
    return _clean_message(response.text)


# IM answers 400, not 401, when a property read fails on the IM credentials themselves.
_CREDENTIAL_MESSAGES = (
    "Invalid InfrastructureManager credentials",
    "credentials provided for the InfrastructureManager",
    "No username nor token for the InfrastructureManager",
    "No token provided for the InfrastructureManager",
    "Invalid username used for the InfrastructureManager",
    "No authentication data provided",
)


def _raise_for(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if status < 400:
        return
    message = _error_message(response)
    if status in (401, 403) or any(m in message for m in _CREDENTIAL_MESSAGES):
        raise ImUnauthorized(message, status=status, operation=what)
    if status == 404:
        raise ImNotFound(message, status=status, operation=what)
    if status >= 500:
        raise ImUnavailable(message, status=status, operation=what)
    raise ImRejected(message, status=status, operation=what)


# ---------------------------------------------------------------- client
class ImClient:
    """IM's REST API. Use as `async with ImClient(url) as im: ...` or call `aclose()`."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get(IM_URL_ENV) or DEFAULT_IM_URL).rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/json"},
            follow_redirects=False,
            trust_env=False,  # never route IM traffic through a proxy from the environment
        )

    async def __aenter__(self) -> ImClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------ plumbing
    async def _request(
        self,
        method: str,
        path: str,
        auth: ImAuthorization | None,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        content: str | None = None,
        content_type: str | None = None,
    ) -> httpx.Response:
        headers = {}
        if auth is not None:
            headers["Authorization"] = auth.header
        if content_type is not None:
            headers["Content-Type"] = content_type
        started = time.perf_counter()
        try:
            response = await self._http.request(
                method, path, params=params, content=content, headers=headers
            )
        except httpx.TransportError as exc:  # connection refused, reset, timeouts
            raise ImUnavailable(
                f"IM at {self.base_url} did not answer: {exc!r}", operation=what
            ) from exc
        log.debug(
            "IM %s %s -> %d in %.1f ms",
            method, path, response.status_code, (time.perf_counter() - started) * 1000,
        )
        _raise_for(response, what)
        return response

    @staticmethod
    def _decode(response: httpx.Response, kind: type[_T], what: str) -> _T:
        try:
            return msgspec.json.decode(response.content or b"{}", type=kind)
        except msgspec.DecodeError as exc:
            raise ImRejected(
                f"unexpected answer: {response.text[:200]!r}",
                status=response.status_code, operation=what,
            ) from exc

    @staticmethod
    def _inf(inf_id: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", inf_id):
            raise ValueError(f"not an IM infrastructure id: {inf_id!r}")
        return f"/infrastructures/{inf_id}"

    @staticmethod
    def _vm(vm_id: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", vm_id):
            raise ValueError(f"not an IM VM id: {vm_id!r}")
        return vm_id

    # ------------------------------------------------------------ calls
    async def version(self) -> str:
        response = await self._request("GET", "/version", None, "version")
        try:  # {"version": "2.0.0"} with Accept: application/json, else the bare text
            body = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            return response.text.strip()
        return str(body["version"]) if isinstance(body, dict) and "version" in body else str(body)

    async def create(
        self, auth: ImAuthorization, template: str, *, asynchronous: bool = True
    ) -> str:
        """Create an infrastructure from a TOSCA YAML template; returns its IM id at once.

        With `asynchronous` (IM's `?async=1`) IM answers as soon as it has the id; poll
        `state` for the outcome. Without it, IM answers once the VMs exist.
        """
        response = await self._request(
            "POST", "/infrastructures", auth, "create infrastructure",
            params={"async": "1"} if asynchronous else None,
            content=template, content_type="text/yaml",
        )
        inf_id = response.headers.get("InfID")
        if not inf_id:
            inf_id = _last_segment(self._decode(response, _Uri, "create infrastructure").uri)
        return str(inf_id)

    async def list_infrastructures(self, auth: ImAuthorization) -> list[str]:
        """Ids of the infrastructures these IM credentials own (for orphan reconciliation)."""
        response = await self._request("GET", "/infrastructures", auth, "list infrastructures")
        body = self._decode(response, _UriList, "list infrastructures")
        return [_last_segment(item.uri) for item in body.uri_list]

    async def state(self, auth: ImAuthorization, inf_id: str) -> InfrastructureState:
        response = await self._request(
            "GET", f"{self._inf(inf_id)}/state", auth, "infrastructure state"
        )
        return self._decode(response, _StateBody, "infrastructure state").state

    async def outputs(self, auth: ImAuthorization, inf_id: str) -> dict[str, Any]:
        """The TOSCA outputs. IM answers 403 (ImUnauthorized) if not created from TOSCA."""
        response = await self._request(
            "GET", f"{self._inf(inf_id)}/outputs", auth, "infrastructure outputs"
        )
        return self._decode(response, _OutputsBody, "infrastructure outputs").outputs

    async def contmsg(self, auth: ImAuthorization, inf_id: str) -> str:
        """The contextualization log (the deployment's log)."""
        response = await self._request(
            "GET", f"{self._inf(inf_id)}/contmsg", auth, "contextualization log"
        )
        return self._decode(response, _ContmsgBody, "contextualization log").contmsg

    async def tosca(self, auth: ImAuthorization, inf_id: str) -> str:
        """The TOSCA template IM holds (with every update merged in)."""
        response = await self._request(
            "GET", f"{self._inf(inf_id)}/tosca", auth, "infrastructure template"
        )
        return self._decode(response, _ToscaBody, "infrastructure template").tosca

    async def vm_ids(self, auth: ImAuthorization, inf_id: str) -> list[str]:
        response = await self._request("GET", self._inf(inf_id), auth, "list VMs")
        body = self._decode(response, _UriList, "list VMs")
        return [_last_segment(item.uri) for item in body.uri_list]

    async def vm_info(self, auth: ImAuthorization, inf_id: str, vm_id: str) -> VmInfo:
        response = await self._request(
            "GET", f"{self._inf(inf_id)}/vms/{self._vm(vm_id)}", auth, "VM information"
        )
        body = self._decode(response, _RadlBody, "VM information")
        return VmInfo(vm_id=vm_id, radl=body.radl)

    async def vms(self, auth: ImAuthorization, inf_id: str) -> list[VmInfo]:
        """Every VM's information, in IM's order."""
        ids = await self.vm_ids(auth, inf_id)
        return list(await asyncio.gather(*(self.vm_info(auth, inf_id, v) for v in ids)))

    async def vm_state(self, auth: ImAuthorization, inf_id: str, vm_id: str) -> str:
        response = await self._request(
            "GET", f"{self._inf(inf_id)}/vms/{self._vm(vm_id)}/state", auth, "VM state"
        )
        return self._decode(response, _VmStateBody, "VM state").state

    async def update(self, auth: ImAuthorization, inf_id: str, template: str) -> list[str]:
        """Send a new TOSCA template; IM merges it into the stored one (pitfall 5: counts
        must be explicit), adds and removes VMs accordingly. Returns the new VMs' ids."""
        response = await self._request(
            "POST", self._inf(inf_id), auth, "update infrastructure",
            content=template, content_type="text/yaml",
        )
        if not response.content:
            return []
        body = self._decode(response, _UriList, "update infrastructure")
        return [_last_segment(item.uri) for item in body.uri_list]

    async def reconfigure(self, auth: ImAuthorization, inf_id: str) -> None:
        await self._request("PUT", f"{self._inf(inf_id)}/reconfigure", auth, "reconfigure")

    async def remove_vms(
        self, auth: ImAuthorization, inf_id: str, vm_ids: Sequence[str], *, context: bool = True
    ) -> None:
        """Remove these VMs (IM takes a comma-separated list)."""
        if not vm_ids:
            return
        listed = ",".join(self._vm(v) for v in vm_ids)
        await self._request(
            "DELETE", f"{self._inf(inf_id)}/vms/{listed}", auth, "remove VMs",
            params=None if context else {"context": "0"},
        )

    async def start_vm(self, auth: ImAuthorization, inf_id: str, vm_id: str) -> None:
        await self._request(
            "PUT", f"{self._inf(inf_id)}/vms/{self._vm(vm_id)}/start", auth, "start VM"
        )

    async def stop_vm(self, auth: ImAuthorization, inf_id: str, vm_id: str) -> None:
        await self._request(
            "PUT", f"{self._inf(inf_id)}/vms/{self._vm(vm_id)}/stop", auth, "stop VM"
        )

    async def start(self, auth: ImAuthorization, inf_id: str) -> None:
        await self._request("PUT", f"{self._inf(inf_id)}/start", auth, "start infrastructure")

    async def stop(self, auth: ImAuthorization, inf_id: str) -> None:
        await self._request("PUT", f"{self._inf(inf_id)}/stop", auth, "stop infrastructure")

    async def delete(self, auth: ImAuthorization, inf_id: str, *, force: bool = False) -> bool:
        """One DELETE. True if IM accepted it, False if it already did not know the id (404).

        A True does not mean it is gone (pitfall 1): use `destroy` to be sure.
        """
        try:
            await self._request(
                "DELETE", self._inf(inf_id), auth, "delete infrastructure",
                params={"force": "yes"} if force else None,
            )
        except ImNotFound:
            return False
        return True

    async def exists(self, auth: ImAuthorization, inf_id: str) -> bool:
        try:
            await self.state(auth, inf_id)
        except ImNotFound:
            return False
        return True

    async def gone(self, auth: ImAuthorization, inf_id: str) -> bool:
        """True if IM answers 404 for the infrastructure and does not list it.

        Both: after a lost delete IM can answer 404 from memory while its database still
        lists the infrastructure, which comes back on the next read (pitfall 1).
        """
        if await self.exists(auth, inf_id):
            return False
        return inf_id not in await self.list_infrastructures(auth)

    async def _stays_gone(
        self, auth: ImAuthorization, inf_id: str, *, within: float, settle: float, poll: float
    ) -> bool:
        deadline = time.monotonic() + within
        gone_since: float | None = None
        while True:
            now = time.monotonic()
            if await self.gone(auth, inf_id):
                gone_since = now if gone_since is None else gone_since
                if now - gone_since >= settle:
                    return True
            else:
                gone_since = None
            if now >= deadline:
                return False
            await asyncio.sleep(poll)

    async def _delete_when_idle(
        self, auth: ImAuthorization, inf_id: str, *, force: bool, within: float, poll: float
    ) -> bool:
        deadline = time.monotonic() + within
        while True:
            try:
                return await self.delete(auth, inf_id, force=force)
            except ImRejected as exc:
                if exc.status != 409 or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(poll)

    async def destroy(
        self,
        auth: ImAuthorization,
        inf_id: str,
        *,
        force: bool = False,
        max_deletes: int = 5,
        confirm_seconds: float = 2.0,
        settle_seconds: float = 0.5,
        busy_seconds: float = 60.0,
        poll_seconds: float = 0.1,
    ) -> DeleteResult:
        """Delete and confirm (pitfall 1): after each DELETE, poll until IM has answered
        "gone" (404 and not listed) for `settle_seconds` in a row, within `confirm_seconds`;
        otherwise DELETE again (with `force`), up to `max_deletes` DELETEs in all. Under
        concurrent reads IM 2.0.0 lost about half of such deletes here, once three in a row.

        IM's 404 to the first DELETE counts as gone too (`already_gone`), once confirmed.
        While IM is still creating VMs it answers 409 ("Invalid State to perform this
        operation"): DELETE is retried for up to `busy_seconds`, then the 409 is raised.
        Raises `ImDeleteNotConfirmed` if IM still holds the infrastructure after that.
        """
        for attempt in range(1, max_deletes + 1):
            # A re-delete only removes IM's resurrected record: the first accepted DELETE
            # already destroyed the VMs, so the cloud may no longer know them (force).
            accepted = await self._delete_when_idle(
                auth, inf_id, force=force or attempt > 1, within=busy_seconds, poll=poll_seconds
            )
            if await self._stays_gone(
                auth, inf_id, within=confirm_seconds, settle=settle_seconds, poll=poll_seconds
            ):
                return DeleteResult(deletes=attempt, already_gone=attempt == 1 and not accepted)
            log.warning(
                "IM still holds infrastructure %s after DELETE %d of %d",
                inf_id, attempt, max_deletes,
            )
        raise ImDeleteNotConfirmed(
            f"IM still holds {inf_id} after {max_deletes} DELETEs",
            operation="delete infrastructure",
        )
