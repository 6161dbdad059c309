"""The Infrastructure Manager deployer: a process manager over the deployment streams.

`handle()` only wakes the deployment's *driver*, a background task owned by this handler
(one per deployment at most, so a deployment's steps never run concurrently). The driver
folds the stream, decides the next step from the state alone, performs it and records its
outcome through the command service, and loops until nothing is left to do. The stream is
the only progress record: a driver killed anywhere and started again (by `run_background`
at start-up, which resumes every unfinished deployment) redoes at most the step it was in,
and every step is idempotent on (deployment, attempt) - the domain turns a repeated
command into no events, and commands carry idempotency keys.

Create: StartAttempt on the best untried candidate -> POST ?async=1 with a template made
IM-safe (`tosca.strip_contextualization`) and marked with the deployment, the attempt and
this orchestrator's instance name (IM keeps the template's `metadata`) ->
RecordInfrastructureCreated as soon as IM answers -> poll the state with backoff and jitter
until configured / failed / unconfigured or the per-provider timeout -> outputs, VMs as
resources, CompleteDeployment; or FailAttempt, destroy that infrastructure (unless it is the
last attempt and keepLastAttempt), next site within maxProvidersRetry and timeoutMins, and
finally FailDeployment listing every attempt's site and error.

Crash windows: an infrastructure IM created whose id was not recorded yet is found by
`reconcile()` (IM's list, the template marker): recorded for its attempt, or destroyed when
its attempt has another one or the deployment is gone. It runs at start-up before any
driver resumes, and periodically. A recorded-but-destroyed infrastructure IM still lists
(IM 2.0.0's lost deletes) is destroyed again.

Tokens: the user's access token is read from the `UserCredentials` port right before a
header is built, and lives only in that header (whose repr hides it); never in events or
logs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import msgspec
import yaml

from domain.deployments import (
    Attempt as DeploymentAttempt,
)
from domain.deployments import (
    AttemptFailureCause,
    AttemptOutcome,
    ChangeResources,
    CompleteDeletion,
    CompleteDeployment,
    DeploymentCommand,
    DeploymentError,
    DeploymentState,
    DeploymentStatus,
    FailAttempt,
    FailDeletion,
    FailDeployment,
    InfrastructureConflict,
    NodeState,
    RankedSite,
    RecordInfrastructureCreated,
    RecordInfrastructureDestroyed,
    RecordLog,
    Resource,
    StaleCommand,
    StartAttempt,
    stream_id,
)
from domain.deployments.values import CloudProviderEndpoint, IaasType
from domain.identity import system_actor
from eventstore.command_service import CommandService
from eventstore.records import Metadata
from handlers.drivers import Drivers, sleep_or_woken
from handlers.im_client import (
    FINAL_STATES,
    ImAuthorization,
    ImClient,
    ImError,
    ImNotFound,
    ImUnauthorized,
    ImUnavailable,
    InfrastructureState,
    VmInfo,
)
from handlers.ranking import DEPLOYMENTS
from handlers.site_config import MissingUserToken, SiteCatalog, SiteConfig, SiteConfigError
from tosca import TemplateError, strip_contextualization

log = logging.getLogger("orchestrator.im_deployer")

ACTOR = system_actor("im-deployer")
MARKER_KEYS = ("orchestrator_instance", "orchestrator_deployment", "orchestrator_attempt")
# Events that may give the driver something to do. Its own reports are not here: the
# driver loops by itself after each step. `deployment.data_ready` is the data-staging
# gate's event (unknown tags are ignored by the runner until they are registered).
WAKING_EVENTS = frozenset({
    "deployment.scheduled", "deployment.update_requested", "deployment.deletion_requested",
    "deployment.resource_action_requested", "deployment.status_reset",
    "deployment.retry_requested", "deployment.data_ready",
    # ended by someone else (stuck sweeper, reset, immediate deletion): stop polling
    "deployment.failed", "deployment.deleted",
})
# IM VM state -> legacy node state.
NODE_STATES = {
    "pending": NodeState.CREATING, "running": NodeState.CONFIGURING,
    "configured": NodeState.STARTED, "unconfigured": NodeState.ERROR,
    "stopped": NodeState.STOPPED, "off": NodeState.STOPPED, "failed": NodeState.ERROR,
    "deleting": NodeState.DELETING, "unknown": NodeState.ERROR,
}
S = DeploymentStatus


class UserCredentials(Protocol):
    """The credential store's port: the owner's current access token for a deployment
    (refreshed by the store as needed), or None when none is stored."""

    async def access_token(self, deployment_id: str) -> str | None: ...


class NoUserCredentials:
    """No credential store: only sites that need no user token (Dummy, static IM users)."""

    async def access_token(self, deployment_id: str) -> str | None:
        return None


@dataclass(frozen=True)
class ImDeployerSettings:
    instance: str = "orchestrator"  # written in the template marker; orphans of others stay
    default_im_url: str | None = None
    poll_initial_s: float = 0.2
    poll_max_s: float = 5.0
    poll_factor: float = 1.5
    poll_jitter: float = 0.2  # +-20 %
    contmsg_every_polls: int = 3
    default_provider_timeout_s: float = 14400 * 60.0  # the legacy default, 14400 min
    unavailable_retries: int = 8  # IM not answering, before a delete/update/action fails
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    reconcile_interval_s: float = 300.0
    reconcile_concurrency: int = 8  # template reads in flight when looking for markers
    delete_confirm_s: float = 2.0
    delete_settle_s: float = 0.5


Checkpoint = Callable[[str], Awaitable[None]]


async def _no_checkpoint(name: str) -> None:
    return None


class _Retry(Exception):
    """The step must be done again after a pause (IM unavailable and the like)."""


def _jittered(delay: float, jitter: float) -> float:
    return max(0.0, delay * (1 + random.uniform(-jitter, jitter)))


def _site_label(site: Any) -> str:
    return f"{site.provider_name or site.provider_id}" + (f"/{site.region}" if site.region else "")


class ImDeployer:
    """The side-effect handler (eventstore.dead_letters.Handler) driving IM."""

    NAME = "im-deployer"
    HANDLES = WAKING_EVENTS

    def __init__(self, *, commands: CommandService, sites: Callable[[], SiteCatalog],
                 credentials: UserCredentials | None = None,
                 settings: ImDeployerSettings | None = None,
                 checkpoint: Checkpoint = _no_checkpoint) -> None:
        self.commands = commands
        self.sites = sites
        self.credentials = credentials or NoUserCredentials()
        self.settings = settings or ImDeployerSettings()
        self.checkpoint = checkpoint
        self._clients: dict[str, ImClient] = {}
        self._drivers = Drivers(self.NAME, self._drive)
        # Attempts whose create this process started: no orphan to look for before it.
        self._fresh: set[tuple[str, int]] = set()
        self._failures: dict[tuple[str, int, str], int] = {}
        self._node_types: dict[str, dict[str, str]] = {}
        self._known: set[str] = set()  # IM ids reconcile() found recorded and live
        self._foreign: set[str] = set()  # IM ids without our marker
        # Stream version each driver last saw (its own writes included): a poll that finds
        # the stream longer knows someone else wrote, without waiting for Kafka's wake.
        self._seen: dict[str, int] = {}

    # ------------------------------------------------------------ handler protocol
    async def handle(self, event: Any, decoded: Any) -> None:
        self.kick(event.stream_id.removeprefix("deployment-"))

    def kick(self, deployment_id: str) -> None:
        """Wake (or start) the deployment's driver. Never blocks."""
        self._drivers.wake(deployment_id)

    async def idle(self) -> None:
        """Until no driver runs (tests)."""
        await self._drivers.idle()

    # ------------------------------------------------------------ background
    async def run_background(self, stop: asyncio.Event) -> None:
        """Start-up reconciliation and resumption, then periodic reconciliation; on stop,
        cancel the drivers (their progress is in the log)."""
        try:
            while not stop.is_set():
                try:
                    await self.reconcile()
                except Exception:  # IM down or misconfigured: try again next round
                    log.exception("IM orphan reconciliation failed")
                try:
                    await self.resume()
                except Exception:
                    log.exception("resuming deployments failed")
                await sleep_or_woken(stop, self.settings.reconcile_interval_s)
        finally:
            await self.close()

    async def close(self) -> None:
        await self._drivers.close()
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    async def resume(self) -> None:
        """Kick every deployment not yet deleted; each driver exits at once when its
        deployment has nothing to do (finished, or waiting for the scheduler)."""
        async with self.commands.store.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT stream_id FROM events WHERE category = 'deployment' GROUP BY stream_id "
                "HAVING bool_and(type <> 'deployment.deleted')")
        for row in rows:
            self.kick(str(row["stream_id"]).removeprefix("deployment-"))

    # ------------------------------------------------------------ plumbing
    def client_for(self, site: SiteConfig | None) -> ImClient:
        url = (site.im_url if site else None) or self.settings.default_im_url or ""
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = ImClient(url or None)
        return client

    async def load_state(self, deployment_id: str) -> DeploymentState:
        state, _ = await self.commands.load(stream_id(deployment_id), DEPLOYMENTS)
        return state

    async def _execute(self, command: DeploymentCommand, key: str | None = None
                       ) -> DeploymentState:
        result = await self.commands.execute(
            stream_id(command.deployment_id), DEPLOYMENTS, command,
            Metadata(actor_issuer=ACTOR.issuer, actor_subject=ACTOR.subject),
            idempotency_key=f"im-deployer:{command.deployment_id}:{key}" if key else None,
            conflict_retries=5)
        self._seen[command.deployment_id] = max(self._seen.get(command.deployment_id, 0),
                                                result.state.version)
        return result.state

    def site_config(self, site: Any) -> SiteConfig | None:
        return self.sites().find(site.provider_id, site.region)

    async def authorization(self, deployment_id: str, config: SiteConfig) -> ImAuthorization:
        token = None
        if config.needs_user_token:
            try:
                token = await self.credentials.access_token(deployment_id)
            except Exception as error:  # no key, refresh refused...: the attempt fails
                raise MissingUserToken(
                    f"site {config.provider_id} needs the user's access token, which is "
                    f"unavailable: {type(error).__name__}: {error}") from None
        return config.authorization(token)

    # ------------------------------------------------------------ the driver
    async def _drive(self, deployment_id: str, wake: asyncio.Event) -> None:
        failures = 0
        while True:
            wake.clear()
            try:
                state = await self.load_state(deployment_id)
                self._seen[deployment_id] = state.version
                progressed = await self._step(state, wake)
                failures = 0
            except asyncio.CancelledError:
                raise
            except StaleCommand:
                progressed = True  # the state moved on under us: look again
            except Exception as error:
                failures += 1
                delay = min(self.settings.retry_max_s,
                            self.settings.retry_initial_s * 2 ** min(failures, 10))
                if isinstance(error, _Retry | ImUnavailable):
                    log.warning("deployment %s: %s; again in %.1f s", deployment_id, error, delay)
                else:
                    log.exception("deployment %s: step failed; again in %.1f s",
                                  deployment_id, delay)
                await sleep_or_woken(wake, _jittered(delay, 0.2))
                continue
            if not progressed and not wake.is_set():
                # Nothing to do until the next event: the driver ends (Drivers forgets it
                # in the same loop turn, so a later kick starts a new one).
                self._seen.pop(deployment_id, None)
                return

    async def _step(self, state: DeploymentState, wake: asyncio.Event) -> bool:
        """Do the next thing; False when there is nothing to do until a new event."""
        match state.status:
            case S.CREATE_IN_PROGRESS:
                return await self._create_step(state, wake)
            case S.UPDATE_IN_PROGRESS:
                return await self._update_step(state, wake)
            case S.DELETE_IN_PROGRESS:
                return await self._delete_step(state)
            case S.CREATE_COMPLETE | S.UPDATE_COMPLETE | S.UPDATE_FAILED:
                return await self._actions_step(state, wake)
        return False

    # ------------------------------------------------------------ create
    def _next_candidate(self, state: DeploymentState) -> RankedSite | None:
        attempts = state.current_operation_attempts
        if state.max_providers_retry is not None and len(attempts) >= state.max_providers_retry:
            return None
        if state.timeout_mins is not None and attempts:
            started = attempts[0].started_at
            if datetime.now(UTC) >= started + timedelta(minutes=state.timeout_mins):
                return None
        tried = {a.site for a in attempts}
        for candidate in state.candidates or ():
            if candidate.site not in tried:
                return candidate
        return None

    async def _create_step(self, state: DeploymentState, wake: asyncio.Event) -> bool:
        if state.candidates is None or state.awaiting_data:
            return False  # the scheduler, or the data-staging gate, comes first
        running = state.running_attempt
        if running is not None:
            if running.infrastructure_id is None:
                await self._create_infrastructure(state, running)
            else:
                await self._watch_attempt(state, running, wake)
            return True
        candidate = self._next_candidate(state)
        attempts = state.current_operation_attempts
        keep = attempts[-1] if (candidate is None and state.keep_last_attempt and attempts) \
            else None
        for attempt in attempts:
            if (attempt.outcome == AttemptOutcome.FAILED and attempt.infrastructure_live
                    and attempt is not keep):
                await self._destroy_attempt(state, attempt, force=True)
                return True
        if candidate is not None:
            number = state.last_attempt_number + 1
            config = self.site_config(candidate.site)
            endpoint = None
            if config is not None:
                try:
                    iaas = IaasType(config.iaas_type.upper())
                except ValueError:
                    iaas = IaasType.OPENSTACK
                endpoint = CloudProviderEndpoint(
                    cp_endpoint=config.endpoint or (config.im_url or ""), iaas_type=iaas,
                    region=candidate.site.region, im_endpoint=config.im_url)
            self._fresh.add((state.deployment_id, number))
            await self._execute(StartAttempt(
                deployment_id=state.deployment_id, actor=ACTOR, operation=state.operation,
                attempt=number, site=candidate.site, cloud_provider_endpoint=endpoint),
                f"{state.operation}:start:{number}")
            log.info("deployment %s: attempt %d on %s", state.deployment_id, number,
                     _site_label(candidate.site))
            await self.checkpoint("attempt_started")
            return True
        reason = self._exhausted_reason(state)
        await self._execute(FailDeployment(
            deployment_id=state.deployment_id, actor=ACTOR, operation=state.operation,
            reason=reason), f"{state.operation}:failed")
        log.info("deployment %s: CREATE_FAILED: %s", state.deployment_id, reason)
        return True

    @staticmethod
    def _exhausted_reason(state: DeploymentState) -> str:
        attempts = state.current_operation_attempts
        if not attempts:
            return "No cloud provider could be selected for the deployment"
        errors = "; ".join(f"attempt {a.number} on {_site_label(a.site)}: "
                           f"{a.failure_reason or a.outcome}" for a in attempts)
        return f"Retries on cloud providers exhausted. Error list is: {errors}"

    def _provider_deadline(self, state: DeploymentState, attempt: DeploymentAttempt,
                           config: SiteConfig | None) -> tuple[datetime, float]:
        seconds = self._provider_timeout(state, config)
        deadline = attempt.started_at + timedelta(seconds=seconds)
        if state.timeout_mins is not None:
            first = state.current_operation_attempts[0].started_at
            deadline = min(deadline, first + timedelta(minutes=state.timeout_mins))
        return deadline, seconds

    async def _fail_attempt(self, state: DeploymentState, attempt: DeploymentAttempt,
                            reason: str, cause: AttemptFailureCause = AttemptFailureCause.ERROR
                            ) -> None:
        reason = reason.strip()[:1500]
        await self._execute(FailAttempt(
            deployment_id=state.deployment_id, actor=ACTOR, attempt=attempt.number,
            reason=reason, cause=cause), f"attempt:{attempt.number}:failed")
        log.info("deployment %s: attempt %d on %s failed (%s): %s", state.deployment_id,
                 attempt.number, _site_label(attempt.site), cause, reason)

    def _marked_template(self, state: DeploymentState, attempt: int) -> str:
        stripped = strip_contextualization(state.template, inputs=state.parameters or None)
        document = yaml.safe_load(stripped)
        metadata = document.get("metadata")
        metadata = dict(metadata) if isinstance(metadata, dict) else {}
        metadata.update(dict(zip(MARKER_KEYS, (self.settings.instance, state.deployment_id,
                                               attempt), strict=True)))
        document["metadata"] = metadata
        return yaml.safe_dump(document, sort_keys=False)

    async def _create_infrastructure(self, state: DeploymentState,
                                     attempt: DeploymentAttempt) -> None:
        config = self.site_config(attempt.site)
        if config is None:
            await self._fail_attempt(state, attempt, f"no IM configuration for site "
                                     f"{_site_label(attempt.site)}")
            return
        deadline, _ = self._provider_deadline(state, attempt, config)
        if datetime.now(UTC) >= deadline:
            await self._fail_attempt(state, attempt, "IM did not accept the deployment before "
                                     "the provider timeout", AttemptFailureCause.TIMEOUT)
            return
        client = self.client_for(config)
        try:
            auth = await self.authorization(state.deployment_id, config)
        except (MissingUserToken, ValueError, msgspec.ValidationError) as error:
            await self._fail_attempt(state, attempt, f"IM credentials: {error}")
            return
        key = (state.deployment_id, attempt.number)
        if key not in self._fresh:
            # Resumed after a restart: IM may hold this attempt's infrastructure already.
            found = await self._find_marked(client, auth, state.deployment_id, attempt.number)
            if found is not None:
                await self._record_created(state, attempt, found, client, auth)
                return
        try:
            template = await asyncio.to_thread(self._marked_template, state, attempt.number)
        except (TemplateError, yaml.YAMLError) as error:
            await self._fail_attempt(state, attempt, f"template not deployable: {error}")
            return
        try:
            infrastructure_id = await client.create(auth, template, asynchronous=True)
        except ImUnavailable:
            raise
        except ImError as error:
            await self._fail_attempt(state, attempt, f"IM refused the deployment: {error}")
            return
        self._fresh.add(key)
        await self.checkpoint("created_in_im")
        await self._record_created(state, attempt, infrastructure_id, client, auth)

    async def _record_created(self, state: DeploymentState, attempt: DeploymentAttempt,
                              infrastructure_id: str, client: ImClient,
                              auth: ImAuthorization) -> None:
        try:
            await self._execute(RecordInfrastructureCreated(
                deployment_id=state.deployment_id, actor=ACTOR, attempt=attempt.number,
                infrastructure_id=infrastructure_id), f"attempt:{attempt.number}:created")
        except (InfrastructureConflict, DeploymentError) as error:
            # Not ours to keep (another id recorded, or the deployment is gone).
            log.warning("deployment %s: infrastructure %s not recorded (%s); destroying it",
                        state.deployment_id, infrastructure_id, error)
            await client.destroy(auth, infrastructure_id, force=True,
                                 confirm_seconds=self.settings.delete_confirm_s,
                                 settle_seconds=self.settings.delete_settle_s)
            return
        self._known.add(infrastructure_id)
        log.info("deployment %s: attempt %d created IM infrastructure %s", state.deployment_id,
                 attempt.number, infrastructure_id)
        await self.checkpoint("infrastructure_recorded")

    async def _find_marked(self, client: ImClient, auth: ImAuthorization, deployment_id: str,
                           attempt: int) -> str | None:
        try:
            ids = await client.list_infrastructures(auth)
        except ImUnauthorized:
            return None
        # Ids reconcile() already classified cannot be this attempt's unrecorded one.
        unknown = [i for i in ids if i not in self._known and i not in self._foreign]
        markers = await self._markers(client, auth, unknown)
        for infrastructure_id, marker in zip(unknown, markers, strict=True):
            if marker == (self.settings.instance, deployment_id, attempt):
                return infrastructure_id
        return None

    async def _markers(self, client: ImClient, auth: ImAuthorization,
                       ids: list[str]) -> list[tuple[str, str, int] | None]:
        """The markers of these infrastructures, a few requests at a time (a shared IM can
        hold hundreds of other users' infrastructures)."""
        limit = asyncio.Semaphore(self.settings.reconcile_concurrency)

        async def one(infrastructure_id: str) -> tuple[str, str, int] | None:
            async with limit:
                return await self._marker(client, auth, infrastructure_id)

        return list(await asyncio.gather(*(one(i) for i in ids)))

    async def _marker(self, client: ImClient, auth: ImAuthorization,
                      infrastructure_id: str) -> tuple[str, str, int] | None:
        try:
            document = yaml.safe_load(await client.tosca(auth, infrastructure_id))
        except (ImNotFound, ImUnauthorized, yaml.YAMLError):
            return None
        metadata = document.get("metadata") if isinstance(document, dict) else None
        if not isinstance(metadata, dict):
            return None
        values = tuple(metadata.get(k) for k in MARKER_KEYS)
        if not (isinstance(values[0], str) and isinstance(values[1], str)
                and isinstance(values[2], int)):
            return None
        return values[0], values[1], values[2]

    async def _poll_until_final(
        self, state: DeploymentState, client: ImClient, auth: ImAuthorization,
        infrastructure_id: str, deadline: datetime, wake: asyncio.Event,
        attempt: int | None,
    ) -> InfrastructureState | None:
        """IM's state once final; None on timeout or when woken (the state may have moved)."""
        delay = self.settings.poll_initial_s
        polls = 0
        while True:
            if datetime.now(UTC) >= deadline:
                return None
            current = await client.state(auth, infrastructure_id)
            polls += 1
            if current.state in FINAL_STATES or polls % self.settings.contmsg_every_polls == 1:
                await self._record_log(state, client, auth, infrastructure_id, attempt)
            if current.state in FINAL_STATES:
                return current
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            pause = min(_jittered(delay, self.settings.poll_jitter), max(remaining, 0.0))
            if await sleep_or_woken(wake, pause) or await self._moved_on(state):
                raise _Woken()
            delay = min(delay * self.settings.poll_factor, self.settings.poll_max_s)

    async def _moved_on(self, state: DeploymentState) -> bool:
        """Someone else wrote to the stream (a deletion, a reset...) since we last looked."""
        version = await self.commands.store.stream_version(stream_id(state.deployment_id))
        return version > self._seen.get(state.deployment_id, state.version)

    async def _record_log(self, state: DeploymentState, client: ImClient, auth: ImAuthorization,
                          infrastructure_id: str, attempt: int | None) -> None:
        try:
            contmsg = await client.contmsg(auth, infrastructure_id)
        except ImError:
            return
        if contmsg and contmsg != state.log:
            await self._execute(RecordLog(deployment_id=state.deployment_id, actor=ACTOR,
                                          log=contmsg, attempt=attempt))

    async def _watch_attempt(self, state: DeploymentState, attempt: DeploymentAttempt,
                             wake: asyncio.Event) -> None:
        assert attempt.infrastructure_id is not None
        config = self.site_config(attempt.site)
        if config is None:
            await self._fail_attempt(state, attempt, f"no IM configuration for site "
                                     f"{_site_label(attempt.site)}")
            return
        client = self.client_for(config)
        try:
            auth = await self.authorization(state.deployment_id, config)
        except MissingUserToken as error:
            await self._fail_attempt(state, attempt, f"IM credentials: {error}")
            return
        deadline, seconds = self._provider_deadline(state, attempt, config)
        try:
            final = await self._poll_until_final(state, client, auth, attempt.infrastructure_id,
                                                 deadline, wake, attempt.number)
        except _Woken:
            return
        except (ImNotFound, ImUnauthorized) as error:
            await self._fail_attempt(state, attempt, f"IM: {error}")
            return
        if final is None:
            await self._fail_attempt(
                state, attempt, f"{_site_label(attempt.site)}: IM infrastructure "
                f"{attempt.infrastructure_id} not configured within the provider timeout "
                f"({seconds:g} s)", AttemptFailureCause.TIMEOUT)
            return
        if final.state != "configured":
            try:
                contmsg = await client.contmsg(auth, attempt.infrastructure_id)
            except ImError:
                contmsg = ""
            tail = contmsg.strip().splitlines()[-3:] if contmsg.strip() else []
            await self._fail_attempt(
                state, attempt, f"IM infrastructure {attempt.infrastructure_id} is "
                f"{final.state}" + (f": {' | '.join(tail)}" if tail else ""))
            return
        await self._refresh(state, client, auth, attempt.infrastructure_id)
        await self.checkpoint("resources_recorded")
        outputs = await self._outputs(client, auth, attempt.infrastructure_id)
        await self._execute(CompleteDeployment(
            deployment_id=state.deployment_id, actor=ACTOR, operation=state.operation,
            outputs=outputs), f"{state.operation}:complete")
        log.info("deployment %s: CREATE_COMPLETE on %s (IM infrastructure %s)",
                 state.deployment_id, _site_label(attempt.site), attempt.infrastructure_id)

    async def _outputs(self, client: ImClient, auth: ImAuthorization,
                       infrastructure_id: str) -> dict[str, Any]:
        try:
            return await client.outputs(auth, infrastructure_id)
        except ImUnauthorized:  # IM's 403: not created from TOSCA
            return {}

    # ------------------------------------------------------------ resources
    def _node_type(self, state: DeploymentState, node_name: str | None) -> str:
        types = self._node_types.get(state.template)
        if types is None:
            types = {}
            try:
                document = yaml.safe_load(state.template)
                nodes = document["topology_template"]["node_templates"]
                types = {name: str(node.get("type")) for name, node in nodes.items()
                         if isinstance(node, dict)}
            except (yaml.YAMLError, KeyError, TypeError, AttributeError):
                pass
            if len(self._node_types) > 256:
                self._node_types.clear()
            self._node_types[state.template] = types
        return types.get(node_name or "", "tosca.nodes.Compute")

    def _resource(self, state: DeploymentState, infrastructure_id: str, vm: VmInfo) -> Resource:
        physical = vm.system.get("instance_id")
        return Resource(
            resource_id=str(uuid.uuid5(uuid.NAMESPACE_URL,
                                       f"im:{state.deployment_id}:{infrastructure_id}:{vm.vm_id}")),
            node_name=vm.node_name or "unknown", node_type=self._node_type(state, vm.node_name),
            state=NODE_STATES.get(vm.state or "unknown", NodeState.ERROR),
            physical_id=str(physical) if physical is not None else None, im_vm_id=vm.vm_id)

    async def _refresh(self, state: DeploymentState, client: ImClient, auth: ImAuthorization,
                       infrastructure_id: str) -> None:
        """The VMs as resources; those IM no longer lists become DELETED."""
        vms = await client.vms(auth, infrastructure_id)
        resources = [self._resource(state, infrastructure_id, vm) for vm in vms]
        listed = {r.resource_id for r in resources}
        for old in state.resources:
            if old.resource_id not in listed and old.state != NodeState.DELETED:
                resources.append(msgspec.structs.replace(old, state=NodeState.DELETED))
        if resources:
            await self._execute(ChangeResources(deployment_id=state.deployment_id, actor=ACTOR,
                                                resources=tuple(resources)))

    # ------------------------------------------------------------ update
    def current_attempt(self, state: DeploymentState) -> DeploymentAttempt | None:
        for attempt in reversed(state.attempts):
            if attempt.infrastructure_id == state.physical_id and attempt.infrastructure_live:
                return attempt
        return None

    def _bounded_failure(self, state: DeploymentState, what: str) -> bool:
        """Count one more IM outage for this operation; True once past the bound."""
        key = (state.deployment_id, state.operation, what)
        self._failures[key] = self._failures.get(key, 0) + 1
        return self._failures[key] > self.settings.unavailable_retries

    async def _update_step(self, state: DeploymentState, wake: asyncio.Event) -> bool:
        attempt = self.current_attempt(state)
        config = self.site_config(attempt.site) if attempt is not None else None
        reason = None
        if attempt is None or attempt.infrastructure_id is None:
            reason = "the deployment has no live infrastructure to update"
        elif config is None:
            reason = f"no IM configuration for site {_site_label(attempt.site)}"
        if reason is not None or attempt is None or config is None:
            await self._fail_update(state, reason or "")
            return True
        infrastructure_id = attempt.infrastructure_id
        assert infrastructure_id is not None
        client = self.client_for(config)
        try:
            auth = await self.authorization(state.deployment_id, config)
            template = await asyncio.to_thread(self._marked_template, state, attempt.number)
            # IM merges the template into the one it holds; resending it after a restart
            # is harmless (counts and removal lists are explicit).
            await client.update(auth, infrastructure_id, template)
            await self.checkpoint("update_sent")
            deadline = datetime.now(UTC) + timedelta(seconds=self._provider_timeout(state, config))
            final = await self._poll_until_final(state, client, auth, infrastructure_id,
                                                 deadline, wake, None)
        except _Woken:
            return True
        except ImUnavailable as error:
            if not self._bounded_failure(state, "update"):
                raise
            await self._fail_update(state, f"IM did not answer: {error}")
            return True
        except (ImError, MissingUserToken, TemplateError, yaml.YAMLError) as error:
            await self._fail_update(state, f"IM refused the update: {error}")
            return True
        if final is None or final.state != "configured":
            await self._refresh(state, client, auth, infrastructure_id)
            await self._fail_update(state, "IM infrastructure " + (
                f"is {final.state}" if final else "not configured within the timeout"))
            return True
        await self._refresh(state, client, auth, infrastructure_id)
        outputs = await self._outputs(client, auth, infrastructure_id)
        await self._execute(CompleteDeployment(
            deployment_id=state.deployment_id, actor=ACTOR, operation=state.operation,
            outputs=outputs), f"{state.operation}:complete")
        log.info("deployment %s: UPDATE_COMPLETE", state.deployment_id)
        return True

    def _provider_timeout(self, state: DeploymentState, config: SiteConfig | None) -> float:
        """Seconds an IM operation may take: the smallest of the default, the deployment's
        providerTimeoutMins and the site's own limit."""
        limits = [self.settings.default_provider_timeout_s]
        if state.provider_timeout_mins is not None:
            limits.append(state.provider_timeout_mins * 60.0)
        if config is not None and config.provider_timeout_seconds is not None:
            limits.append(config.provider_timeout_seconds)
        return min(limits)

    async def _fail_update(self, state: DeploymentState, reason: str) -> None:
        await self._execute(FailDeployment(
            deployment_id=state.deployment_id, actor=ACTOR, operation=state.operation,
            reason=reason[:1500]), f"{state.operation}:failed")
        log.info("deployment %s: UPDATE_FAILED: %s", state.deployment_id, reason)

    # ------------------------------------------------------------ delete
    async def _destroy_attempt(self, state: DeploymentState, attempt: DeploymentAttempt, *,
                               force: bool) -> None:
        """Destroy and confirm an attempt's infrastructure, then record it (raises ImError)."""
        assert attempt.infrastructure_id is not None
        config = self.site_config(attempt.site)
        if config is None:
            raise SiteConfigError(f"no IM configuration for site {_site_label(attempt.site)}")
        client = self.client_for(config)
        auth = await self.authorization(state.deployment_id, config)
        await self.checkpoint("before_destroy")
        await client.destroy(auth, attempt.infrastructure_id, force=force,
                             confirm_seconds=self.settings.delete_confirm_s,
                             settle_seconds=self.settings.delete_settle_s)
        await self.checkpoint("destroyed_in_im")
        self._known.discard(attempt.infrastructure_id)
        await self._execute(RecordInfrastructureDestroyed(
            deployment_id=state.deployment_id, actor=ACTOR, attempt=attempt.number,
            infrastructure_id=attempt.infrastructure_id),
            f"attempt:{attempt.number}:destroyed:{attempt.infrastructure_id}")
        log.info("deployment %s: IM infrastructure %s of attempt %d destroyed",
                 state.deployment_id, attempt.infrastructure_id, attempt.number)

    async def _delete_step(self, state: DeploymentState) -> bool:
        for attempt in state.attempts:
            if not (attempt.infrastructure_live and attempt.infrastructure_id):
                continue
            try:
                await self._destroy_attempt(state, attempt, force=state.force_delete)
            except ImUnavailable as error:
                if not self._bounded_failure(state, "delete"):
                    raise
                await self._fail_deletion(state, f"IM did not answer: {error}")
            except (ImError, MissingUserToken, SiteConfigError) as error:
                await self._fail_deletion(
                    state, f"Error deleting IM infrastructure {attempt.infrastructure_id}: "
                    f"{error}")
            return True
        await self._execute(CompleteDeletion(deployment_id=state.deployment_id, actor=ACTOR,
                                             operation=state.operation),
                            f"{state.operation}:deleted")
        log.info("deployment %s: DELETE_COMPLETE", state.deployment_id)
        return True

    async def _fail_deletion(self, state: DeploymentState, reason: str) -> None:
        await self._execute(FailDeletion(deployment_id=state.deployment_id, actor=ACTOR,
                                         operation=state.operation, reason=reason[:1500]),
                            f"{state.operation}:delete_failed")
        log.info("deployment %s: DELETE_FAILED: %s", state.deployment_id, reason)

    # ------------------------------------------------------------ VM start / stop
    async def _actions_step(self, state: DeploymentState, wake: asyncio.Event) -> bool:
        pending = [r for r in state.resources
                   if r.state in (NodeState.STARTING, NodeState.STOPPING) and r.im_vm_id]
        if not pending:
            return False
        attempt = self.current_attempt(state)
        config = self.site_config(attempt.site) if attempt is not None else None
        if attempt is None or config is None or attempt.infrastructure_id is None:
            await self._set_nodes(state, pending, revert=True)
            return True
        client = self.client_for(config)
        auth = await self.authorization(state.deployment_id, config)
        resource = pending[0]
        assert resource.im_vm_id is not None
        stopping = resource.state == NodeState.STOPPING
        targets = {"stopped", "off"} if stopping else {"running", "configured"}
        try:
            current = await client.vm_state(auth, attempt.infrastructure_id, resource.im_vm_id)
            if current not in targets:
                if stopping:
                    await client.stop_vm(auth, attempt.infrastructure_id, resource.im_vm_id)
                else:
                    await client.start_vm(auth, attempt.infrastructure_id, resource.im_vm_id)
            delay = self.settings.poll_initial_s
            deadline = time.monotonic() + self._provider_timeout(state, config)
            while current not in targets and time.monotonic() < deadline:
                await asyncio.sleep(_jittered(delay, self.settings.poll_jitter))
                delay = min(delay * self.settings.poll_factor, self.settings.poll_max_s)
                current = await client.vm_state(auth, attempt.infrastructure_id,
                                                resource.im_vm_id)
        except ImUnavailable:
            if not self._bounded_failure(state, f"action:{resource.resource_id}"):
                raise
            await self._set_nodes(state, [resource], revert=True)
            return True
        except ImError as error:
            log.warning("deployment %s: %s of VM %s failed: %s", state.deployment_id,
                        "stop" if stopping else "start", resource.im_vm_id, error)
            await self._set_nodes(state, [resource], revert=True)
            return True
        if current in targets:
            await self._set_nodes(state, [resource], revert=False)
        else:
            await self._set_nodes(state, [resource], revert=True)
        return True

    async def _set_nodes(self, state: DeploymentState, resources: Iterable[Resource], *,
                         revert: bool) -> None:
        changes = []
        for resource in resources:
            stopping = resource.state == NodeState.STOPPING
            if revert:
                new = NodeState.STARTED if stopping else NodeState.STOPPED
            else:
                new = NodeState.STOPPED if stopping else NodeState.STARTED
            changes.append(msgspec.structs.replace(resource, state=new))
        await self._execute(ChangeResources(deployment_id=state.deployment_id, actor=ACTOR,
                                            resources=tuple(changes)))

    # ------------------------------------------------------------ orphans
    async def reconcile(self) -> dict[str, int]:
        """List IM's infrastructures (per IM endpoint and service credentials) and settle
        those marked as ours: record an unrecorded one for its attempt, destroy one no
        attempt owns any more. Returns counts per outcome."""
        counts = {"recorded": 0, "destroyed": 0, "known": 0, "foreign": 0}
        seen: set[tuple[str | None, str]] = set()
        for config in self.sites().sites:
            service = config.service_authorization()
            if service is None or (config.im_url, service.header) in seen:
                continue
            seen.add((config.im_url, service.header))
            client = self.client_for(config)
            try:
                ids = await client.list_infrastructures(service)
            except ImError as error:
                log.warning("reconcile: cannot list IM infrastructures at %s: %s",
                            client.base_url, error)
                continue
            unknown = []
            for infrastructure_id in ids:
                if infrastructure_id in self._known or infrastructure_id in self._foreign:
                    counts["known" if infrastructure_id in self._known else "foreign"] += 1
                else:
                    unknown.append(infrastructure_id)
            markers = await self._markers(client, service, unknown)
            for infrastructure_id, marker in zip(unknown, markers, strict=True):
                outcome = await self._settle(client, service, infrastructure_id, marker)
                counts[outcome] += 1
        return counts

    async def _settle(self, client: ImClient, service: ImAuthorization,
                      infrastructure_id: str, marker: tuple[str, str, int] | None) -> str:
        if marker is None or marker[0] != self.settings.instance:
            self._foreign.add(infrastructure_id)
            return "foreign"
        _, deployment_id, number = marker
        state = await self.load_state(deployment_id)
        attempt = state.attempt(number)
        if attempt is not None and attempt.infrastructure_id == infrastructure_id \
                and attempt.infrastructure_live:
            self._known.add(infrastructure_id)
            return "known"
        if (attempt is not None and attempt.infrastructure_id is None
                and state.exists and state.status != S.DELETE_COMPLETE):
            try:
                await self._execute(RecordInfrastructureCreated(
                    deployment_id=deployment_id, actor=ACTOR, attempt=number,
                    infrastructure_id=infrastructure_id), f"attempt:{number}:created")
            except DeploymentError as error:
                log.warning("reconcile: %s not recorded: %s", infrastructure_id, error)
            else:
                log.info("reconcile: recorded orphan IM infrastructure %s for attempt %d of "
                         "deployment %s", infrastructure_id, number, deployment_id)
                self._known.add(infrastructure_id)
                self.kick(deployment_id)
                return "recorded"
        # No attempt owns it (another id recorded, destroyed already, deployment gone).
        auth = service
        if attempt is not None:
            config = self.site_config(attempt.site)
            if config is not None:
                try:
                    auth = await self.authorization(deployment_id, config)
                except MissingUserToken:
                    pass
        try:
            await client.destroy(auth, infrastructure_id, force=True,
                                 confirm_seconds=self.settings.delete_confirm_s,
                                 settle_seconds=self.settings.delete_settle_s)
        except ImError as error:
            log.warning("reconcile: orphan %s not destroyed: %s", infrastructure_id, error)
            return "known"
        log.info("reconcile: destroyed orphan IM infrastructure %s (deployment %s, attempt "
                 "%d)", infrastructure_id, deployment_id, number)
        return "destroyed"


class _Woken(Exception):
    """A new event arrived while polling: the driver re-reads the state."""


class ImDeployerInfo:
    """api.legacy.ports.DeployerInfo over IM: VM id -> {"vmProperties": IM's RADL items},
    unredacted (the API redacts). Nothing is stored; IM is asked each time."""

    def __init__(self, deployer: ImDeployer) -> None:
        self.deployer = deployer

    async def vm_info(self, deployment: Any) -> dict[str, dict[str, Any]]:
        state = await self.deployer.load_state(deployment.id)
        attempt = self.deployer.current_attempt(state)
        if attempt is None or attempt.infrastructure_id is None:
            return {}
        config = self.deployer.site_config(attempt.site)
        if config is None:
            return {}
        client = self.deployer.client_for(config)
        try:
            auth = await self.deployer.authorization(state.deployment_id, config)
            vms = await client.vms(auth, attempt.infrastructure_id)
        except (ImError, MissingUserToken) as error:
            log.warning("deployment %s: VM information unavailable: %s", deployment.id, error)
            return {}
        return {vm.vm_id: {"vmProperties": vm.radl} for vm in vms}


__all__ = [
    "ImDeployer",
    "ImDeployerInfo",
    "ImDeployerSettings",
    "NoUserCredentials",
    "UserCredentials",
]
