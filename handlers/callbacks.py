"""Deployment callbacks: POST the legacy Deployment JSON to ``callback`` at terminal statuses.

Legacy behaviour (reference/legacy-orchestrator-api.md 5.9, acceptance check 25): at the end
of a create, update or delete the server POSTs the Deployment object (no links) to the
deployment's callback URL. Kept: the body and the moment. Fixed (section 11, item 18):
bounded retries with exponential backoff, and an optional HMAC-SHA256 signature.

- Reacts to ``deployment.completed`` (CREATE/UPDATE_COMPLETE), ``deployment.failed``
  (CREATE/UPDATE_FAILED), ``deployment.deleted`` (DELETE_COMPLETE) and
  ``deployment.deletion_failed`` (DELETE_FAILED), and ``deployment.status_reset`` (a reset
  of a stuck operation to its ``*_FAILED`` status). The body is the deployment *as of that
  event* (a later change does not leak into an earlier callback), rendered by the API's
  shapes through the :class:`DeploymentDocuments` port the bootstrap implements.
- A 2xx answer delivers. Connection errors, timeouts, 408, 429 and 5xx are retried,
  ``attempts`` tries in all, waiting ``backoff_s``, doubled each time (at most
  ``max_backoff_s``); any other answer gives up at once. Redirects are not followed.
- The outcome goes to the ``callback_deliveries`` table (this handler's own, created on
  first use), one row per terminal event: ``delivered`` or ``failed``, tries, last HTTP
  status or error. A redelivered event whose outcome is recorded is not posted again;
  a crash between the POST and the record can post twice (at least once).

Why a table and not deployment events: the outcome of a notification is not a fact of the
deployment's lifecycle (it changes no status, and DELETE_COMPLETE is a tombstone that
accepts nothing), and it must not move ``updateTime``, which the callback body carries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Container
from typing import Any, Protocol

import httpx
import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore.dead_letters import Backoff
from eventstore.records import RecordedEvent

log = logging.getLogger("orchestrator.callbacks")

TERMINAL_EVENTS = frozenset({
    "deployment.completed",
    "deployment.failed",
    "deployment.deleted",
    "deployment.deletion_failed",
    "deployment.status_reset",  # PATCH: a stuck *_IN_PROGRESS set to *_FAILED
})
SIGNATURE_HEADER = "X-Orchestrator-Signature"
EVENT_ID_HEADER = "X-Orchestrator-Event-Id"
_RETRIED_STATUSES = frozenset({408, 429})

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS callback_deliveries (
    event_id       text        PRIMARY KEY,
    deployment_id  text        NOT NULL,
    stream_version integer     NOT NULL,
    status         text        NOT NULL,
    url            text        NOT NULL,
    outcome        text        NOT NULL CHECK (outcome IN ('delivered', 'failed')),
    attempts       integer     NOT NULL,
    http_status    integer,
    error          text,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS callback_deliveries_deployment
    ON callback_deliveries (deployment_id, stream_version);
"""


class CallbackDocument(msgspec.Struct, frozen=True, kw_only=True):
    """What to post: the callback URL, the deployment's status and its legacy JSON."""

    url: str
    status: str
    body: bytes


class DeploymentDocuments(Protocol):
    async def callback_document(self, deployment_id: str,
                                version: int) -> CallbackDocument | None:
        """The deployment as of stream version ``version``; None without a callback URL."""
        ...


class CallbackPolicy(msgspec.Struct, frozen=True, kw_only=True):
    attempts: int = 5
    timeout_s: float = 10.0
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    # HMAC-SHA256 key: ``X-Orchestrator-Signature: sha256=<hex of HMAC(body)>``.
    secret: str | None = None

    def __post_init__(self) -> None:
        self.backoff()  # a negative wait or no try at all is refused at start-up

    def backoff(self) -> Backoff:
        return Backoff(initial=self.backoff_s, factor=2.0, max=self.max_backoff_s,
                       attempts=self.attempts)


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    outcome: str  # "delivered" | "failed"
    attempts: int
    http_status: int | None = None
    error: str | None = None


class CallbackNotifier:
    """The callbacks handler (see the module docstring)."""

    NAME = "callbacks"
    HANDLES: Container[str] = TERMINAL_EVENTS

    def __init__(self, engine: AsyncEngine, documents: DeploymentDocuments,
                 policy: CallbackPolicy | None = None, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.engine = engine
        self.documents = documents
        self.policy = policy or CallbackPolicy()
        self._transport = transport
        self._table_ready = False
        self._table_lock = asyncio.Lock()

    async def ensure_table(self) -> None:
        if self._table_ready:
            return
        async with self._table_lock:
            if not self._table_ready:
                async with self.engine.begin() as conn:
                    # Serialise concurrent CREATE ... IF NOT EXISTS (it can race in Postgres).
                    await conn.execute(text(
                        "SELECT pg_advisory_xact_lock(hashtext('callback_deliveries'))"))
                    for statement in _CREATE_TABLE.split(";"):
                        if statement.strip():
                            await conn.execute(text(statement))
                self._table_ready = True

    async def handle(self, event: RecordedEvent, decoded: Any) -> None:
        await self.ensure_table()
        async with self.engine.connect() as conn:
            recorded = (await conn.execute(text(
                "SELECT 1 FROM callback_deliveries WHERE event_id = :event_id"),
                {"event_id": event.event_id})).first()
        if recorded is not None:
            return
        document = await self.documents.callback_document(decoded.deployment_id, event.version)
        if document is None:
            return
        delivery = await self.deliver(document, event.event_id)
        if delivery.outcome == "delivered":
            log.info("callback of deployment %s (%s) delivered to %s", decoded.deployment_id,
                     document.status, document.url)
        else:
            log.warning("callback of deployment %s (%s) to %s failed after %d tries: %s",
                        decoded.deployment_id, document.status, document.url,
                        delivery.attempts, delivery.error)
        async with self.engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO callback_deliveries (event_id, deployment_id, stream_version,"
                " status, url, outcome, attempts, http_status, error) VALUES (:event_id,"
                " :deployment_id, :stream_version, :status, :url, :outcome, :attempts,"
                " :http_status, :error) ON CONFLICT (event_id) DO NOTHING"),
                {"event_id": event.event_id, "deployment_id": decoded.deployment_id,
                 "stream_version": event.version, "status": document.status,
                 "url": document.url, "outcome": delivery.outcome,
                 "attempts": delivery.attempts, "http_status": delivery.http_status,
                 "error": delivery.error})

    def _headers(self, document: CallbackDocument, event_id: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: event_id,
                   "User-Agent": "paas-orchestrator-callbacks"}
        if self.policy.secret:
            digest = hmac.new(self.policy.secret.encode(), document.body, hashlib.sha256)
            headers[SIGNATURE_HEADER] = f"sha256={digest.hexdigest()}"
        return headers

    async def deliver(self, document: CallbackDocument, event_id: str) -> Delivery:
        """POST with retries; never raises for the receiver's failures."""
        headers = self._headers(document, event_id)
        delays: list[float | None] = [*self.policy.backoff().delays(), None]
        status: int | None = None
        error = ""
        async with httpx.AsyncClient(timeout=self.policy.timeout_s, follow_redirects=False,
                                     transport=self._transport) as client:
            for number, delay in enumerate(delays, start=1):
                try:
                    response = await client.post(document.url, content=document.body,
                                                 headers=headers)
                except httpx.HTTPError as failure:
                    status, error = None, f"{type(failure).__name__}: {failure}"[:500]
                else:
                    status = response.status_code
                    if 200 <= status < 300:
                        return Delivery(outcome="delivered", attempts=number, http_status=status)
                    error = f"the receiver answered {status}"
                    if status < 500 and status not in _RETRIED_STATUSES:
                        return Delivery(outcome="failed", attempts=number, http_status=status,
                                        error=error)
                if delay is not None:
                    await asyncio.sleep(delay)
        return Delivery(outcome="failed", attempts=len(delays), http_status=status, error=error)


async def deliveries(engine: AsyncEngine, deployment_id: str) -> list[dict[str, Any]]:
    """The recorded callback outcomes of a deployment, oldest first (operators, tests)."""
    async with engine.connect() as conn:
        exists = (await conn.execute(text(
            "SELECT to_regclass('callback_deliveries') IS NOT NULL"))).scalar_one()
        if not exists:
            return []
        rows = await conn.execute(text(
            "SELECT event_id, deployment_id, stream_version, status, url, outcome, attempts,"
            " http_status, error, recorded_at FROM callback_deliveries"
            " WHERE deployment_id = :deployment_id ORDER BY stream_version"),
            {"deployment_id": deployment_id})
        return [dict(row._mapping) for row in rows]
