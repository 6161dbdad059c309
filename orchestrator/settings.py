"""Configuration from environment variables (prefix ORCH_).

Local runs get their connection strings from `.run/env`, written by
scripts/services.sh with generated passwords; real environment variables win.

Variables (default in brackets):

- ORCH_DATABASE_URL, ORCH_KAFKA_BOOTSTRAP [from .run/env]: Postgres URL, Kafka servers.
- ORCH_TOPIC_PREFIX [orchestrator], ORCH_TOPIC_PARTITIONS [4]: topics are
  `<prefix>.<category>s`; consumer group ids carry the prefix too.
- ORCH_API_HOST [127.0.0.1], ORCH_API_PORT [8080], ORCH_API_BASE_PATH [empty, e.g.
  /orchestrator]: where the API listens and under which path prefix.
- ORCH_LOG_LEVEL [INFO].
- ORCH_AUTH_ISSUERS [none: every token is refused]: trusted OIDC issuers, either
  comma-separated issuer URLs or a JSON array of
  {"issuer", "audience", "admin_group", "jwks_url"}.
- ORCH_AUTH_ADMIN_GROUP [orchestrator-admins; `none`: no admins] and ORCH_AUTH_AUDIENCE
  [unset]: admin group and required `aud` of issuers given as plain URLs.
- ORCH_AUTH_ALGORITHMS [RS256,RS384,RS512,ES256,ES384,PS256]: asymmetric algorithms only.
- ORCH_AUTH_REQUIRED_SCOPES [openid,profile]: every call needs all of them.
- ORCH_AUTH_MUTATION_SCOPES [offline_access,fts:submit-transfer]: changes need one.
  (`none` disables either scope check.)
- ORCH_AUTH_GROUP_CLAIMS [groups,wlcg.groups]: claims read as the user's groups.
- ORCH_AUTH_GROUP_VISIBILITY [false]: members of a deployment's user group may read it.
- ORCH_OPA_URL [unset]: an OPA decision URL replacing the built-in per-resource rules.
- ORCH_REQUIRE_USER_GROUP [true]: POST /deployments without userGroup is a 400.
- ORCH_TRUST_FORWARDED_HEADERS [true]: absolute links follow Forwarded and
  X-Forwarded-Proto/Host/Port/Prefix.
- ORCH_CONFIGURATION [{}]: JSON object of strings added to GET /configuration.
- ORCH_TOSCA_WORKERS [2]: TOSCA validator processes, started on the first validation.
- ORCH_TOSCA_TYPES_DIR [../shared/tosca]: TOSCA type files (read by tosca/).
- ORCH_FEEDER_TOPIC [unset: no consumer]: the Federation-Registry-Feeder's Kafka topic
  (e.g. federation-registry-feeder), consumed into provider observations (issue 4).
- ORCH_RANKING [true]: run the ranking handler, the scheduler of create operations
  (`Settings()` built in code defaults to false).
- ORCH_RANKER_REQUEST_TOPIC, ORCH_RANKER_ANSWER_TOPIC [unset: built-in ranking only]: the
  external ranker's Kafka topics (`providers-to-rank` / `ranked_providers`, INFN ai-ranker);
  ORCH_RANKER_DEADLINE_S [5]: how long to wait for its answer before ranking built-in.
- ORCH_RSE_SITES [{}]: JSON {"RSE_NAME": "provider_id[/region]"}: the site close to each
  Rucio RSE (a site near an RSE holding a deployment's input data ranks higher).
- ORCH_SITES_FILE [unset: no IM deployer]: the IM deployer's sites file (YAML/JSON; see
  docs/im.md and handlers/site_config.py); ORCH_IM_URL: IM for sites without `im_url`.
- ORCH_CREDENTIAL_KEYS [unset: user credentials are not kept, work needing them fails]:
  AES-GCM keys of the credential store, `keyid:base64key,...` (16/24/32-byte keys); the
  first seals, all of them open (rotation: put the new key first, keep the old ones).
- ORCH_OIDC_CLIENT_ID, ORCH_OIDC_CLIENT_SECRET [unset]: the orchestrator's OIDC client,
  used to refresh captured user tokens at the issuer's token endpoint.
- ORCH_CREDENTIAL_TOKEN_EXCHANGE [false]: on each accepted command, exchange the
  caller's access token for a refresh token (RFC 8693, as the Java orchestrator did),
  so work outlives the access token; needs ORCH_OIDC_CLIENT_ID.
- ORCH_CALLBACK_ATTEMPTS [5], ORCH_CALLBACK_TIMEOUT_S [10], ORCH_CALLBACK_BACKOFF_S [1]:
  deployment callbacks: tries, per-try timeout, first wait (doubled each time, max 60 s).
- ORCH_CALLBACK_SECRET [unset]: when set, callbacks carry an HMAC-SHA256 signature header.
- ORCH_STUCK_TIMEOUT_MINS [1440]: a *_IN_PROGRESS deployment without timeoutMins and with
  no progress for this long is failed; ORCH_STUCK_SWEEP_INTERVAL_S [60]: how often to look.
- ORCH_RUCIO_URL [unset: no data management], ORCH_RUCIO_ACCOUNT [root],
  ORCH_RUCIO_USERNAME, ORCH_RUCIO_PASSWORD_FILE (userpass identity of that account; the
  password is read from the file, never from the environment or logged),
  ORCH_RUCIO_POLL_INITIAL_S [2], ORCH_RUCIO_POLL_MAX_S [60]: how the replicator follows
  rules (issue 6, docs/rucio.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from api.auth import DEFAULT_ALGORITHMS, AuthSettings, TrustedIssuer
from eventstore.store import SESSION_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
LOCAL_ENV_FILE = ROOT / ".run" / "env"


def _local_env() -> dict[str, str]:
    values: dict[str, str] = {}
    if LOCAL_ENV_FILE.exists():
        for line in LOCAL_ENV_FILE.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or _local_env().get(name) or default


def _flag(name: str, default: bool) -> bool:
    value = env(name)
    if value is None:
        return default
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{name} must be true or false, not {value!r}")


def _names(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list; the single word `none` means an empty list."""
    value = env(name)
    if value is None:
        return default
    if value.strip().lower() == "none":
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


def auth_settings_from_env() -> AuthSettings:
    """ORCH_AUTH_* variables -> api.auth settings (invalid values stop the process).

    ORCH_AUTH_ISSUERS is either a comma-separated list of issuer URLs (each with
    ORCH_AUTH_ADMIN_GROUP and ORCH_AUTH_AUDIENCE) or a JSON array of objects
    ``{"issuer", "audience", "admin_group", "jwks_url"}``.
    """
    raw = (env("ORCH_AUTH_ISSUERS", "") or "").strip()
    admin_group = env("ORCH_AUTH_ADMIN_GROUP", "orchestrator-admins")
    audience = env("ORCH_AUTH_AUDIENCE")
    try:
        if raw.startswith("["):
            issuers = msgspec.convert(json.loads(raw), tuple[TrustedIssuer, ...])
        else:
            issuers = tuple(
                TrustedIssuer(issuer=url.strip(), audience=audience,
                              admin_group=None if admin_group == "none" else admin_group)
                for url in raw.split(",") if url.strip())
        return AuthSettings(
            issuers=issuers,
            algorithms=_names("ORCH_AUTH_ALGORITHMS", DEFAULT_ALGORITHMS),
            required_scopes=_names("ORCH_AUTH_REQUIRED_SCOPES", ("openid", "profile")),
            mutation_scopes=_names("ORCH_AUTH_MUTATION_SCOPES",
                                   ("offline_access", "fts:submit-transfer")),
            group_claims=_names("ORCH_AUTH_GROUP_CLAIMS", ("groups", "wlcg.groups")),
            group_visibility=_flag("ORCH_AUTH_GROUP_VISIBILITY", False),
            opa_url=env("ORCH_OPA_URL"),
        )
    except (ValueError, msgspec.ValidationError) as error:
        raise SystemExit(f"invalid authentication settings: {error}") from None


def _string_map(name: str) -> dict[str, str]:
    """A JSON object of strings (ORCH_CONFIGURATION, ORCH_RSE_SITES); unset: empty."""
    raw = env(name)
    if not raw:
        return {}
    try:
        values: Any = json.loads(raw)
    except ValueError:
        values = None
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise SystemExit(f"{name} must be a JSON object of strings")
    return values


class Settings(msgspec.Struct, kw_only=True):
    database_url: str
    kafka_bootstrap: str
    topic_prefix: str = "orchestrator"
    topic_partitions: int = 4
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_base_path: str = ""
    log_level: str = "INFO"
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    # A create without userGroup is a 400 (false: the deployment has no group).
    require_user_group: bool = True
    # Build absolute links from Forwarded / X-Forwarded-* (legacy behaviour).
    trust_forwarded_headers: bool = True
    # GET /configuration: service URLs shown to clients (strings only).
    configuration: dict[str, str] = msgspec.field(default_factory=dict)
    # TOSCA validator worker processes (started on the first validation).
    tosca_workers: int = 2
    # Provider ingestion (issue 4): the Feeder's topic (external, not one of ours).
    feeder_topic: str | None = None
    # --- provider ranking (issue 4): the scheduler (off unless from_env or set: tests that
    # schedule by hand build systems without it), external ranker over Kafka, RSE map ---
    ranking_enabled: bool = False
    ranker_request_topic: str | None = None
    ranker_answer_topic: str | None = None
    ranker_deadline_s: float = 5.0
    rse_sites: dict[str, str] = msgspec.field(default_factory=dict)
    # --- end provider ranking ---
    # ---- IM deployer (issue 5): the sites file (handlers/site_config.py); unset = no
    # deployer runs in this process.
    im_sites_file: str | None = None
    # --- credential store, callbacks, stuck deployments (handlers/credentials.py,
    # callbacks.py, stuck_sweeper.py) ---
    credential_keys: str | None = None  # secret: never log Settings
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    credential_token_exchange: bool = False
    callback_attempts: int = 5
    callback_timeout_s: float = 10.0
    callback_backoff_s: float = 1.0
    callback_secret: str | None = None
    stuck_timeout_mins: int = 1440
    stuck_sweep_interval_s: float = 60.0
    # --- end credential store, callbacks, stuck deployments ---
    # --- data management (issue 6): the Rucio server and account of the replicator ---
    rucio_url: str | None = None
    rucio_account: str = "root"
    rucio_username: str | None = None
    rucio_password_file: str | None = None
    rucio_poll_initial_s: float = 2.0
    rucio_poll_max_s: float = 60.0
    # --- end data management ---

    @classmethod
    def from_env(cls) -> Settings:
        database_url = env("ORCH_DATABASE_URL")
        kafka = env("ORCH_KAFKA_BOOTSTRAP")
        if not database_url or not kafka:
            raise SystemExit(
                "ORCH_DATABASE_URL and ORCH_KAFKA_BOOTSTRAP are not set; run "
                "scripts/services.sh up (it writes .run/env) or export them")
        return cls(
            database_url=database_url,
            kafka_bootstrap=kafka,
            topic_prefix=env("ORCH_TOPIC_PREFIX", "orchestrator") or "orchestrator",
            topic_partitions=int(env("ORCH_TOPIC_PARTITIONS", "4") or 4),
            api_host=env("ORCH_API_HOST", "127.0.0.1") or "127.0.0.1",
            api_port=int(env("ORCH_API_PORT", "8080") or 8080),
            api_base_path=(env("ORCH_API_BASE_PATH", "") or "").rstrip("/"),
            log_level=env("ORCH_LOG_LEVEL", "INFO") or "INFO",
            auth=auth_settings_from_env(),
            require_user_group=_flag("ORCH_REQUIRE_USER_GROUP", True),
            trust_forwarded_headers=_flag("ORCH_TRUST_FORWARDED_HEADERS", True),
            configuration=_string_map("ORCH_CONFIGURATION"),
            tosca_workers=int(env("ORCH_TOSCA_WORKERS", "2") or 2),
            feeder_topic=env("ORCH_FEEDER_TOPIC"),  # provider ingestion (issue 4)
            # --- provider ranking (issue 4) ---
            ranking_enabled=_flag("ORCH_RANKING", True),
            ranker_request_topic=env("ORCH_RANKER_REQUEST_TOPIC"),
            ranker_answer_topic=env("ORCH_RANKER_ANSWER_TOPIC"),
            ranker_deadline_s=float(env("ORCH_RANKER_DEADLINE_S", "5") or 5),
            rse_sites=_string_map("ORCH_RSE_SITES"),
            # --- end provider ranking ---
            im_sites_file=env("ORCH_SITES_FILE"),  # IM deployer (issue 5)
            # --- credential store, callbacks, stuck deployments ---
            credential_keys=env("ORCH_CREDENTIAL_KEYS"),
            oidc_client_id=env("ORCH_OIDC_CLIENT_ID"),
            oidc_client_secret=env("ORCH_OIDC_CLIENT_SECRET"),
            credential_token_exchange=_flag("ORCH_CREDENTIAL_TOKEN_EXCHANGE", False),
            callback_attempts=int(env("ORCH_CALLBACK_ATTEMPTS", "5") or 5),
            callback_timeout_s=float(env("ORCH_CALLBACK_TIMEOUT_S", "10") or 10),
            callback_backoff_s=float(env("ORCH_CALLBACK_BACKOFF_S", "1") or 1),
            callback_secret=env("ORCH_CALLBACK_SECRET"),
            stuck_timeout_mins=int(env("ORCH_STUCK_TIMEOUT_MINS", "1440") or 1440),
            stuck_sweep_interval_s=float(env("ORCH_STUCK_SWEEP_INTERVAL_S", "60") or 60),
            # --- end credential store, callbacks, stuck deployments ---
            # --- data management (issue 6) ---
            rucio_url=env("ORCH_RUCIO_URL"),
            rucio_account=env("ORCH_RUCIO_ACCOUNT", "root") or "root",
            rucio_username=env("ORCH_RUCIO_USERNAME"),
            rucio_password_file=env("ORCH_RUCIO_PASSWORD_FILE"),
            rucio_poll_initial_s=float(env("ORCH_RUCIO_POLL_INITIAL_S", "2") or 2),
            rucio_poll_max_s=float(env("ORCH_RUCIO_POLL_MAX_S", "60") or 60),
            # --- end data management ---
        )


def sqlalchemy_url(database_url: str) -> str:
    """The same database for SQLAlchemy's asyncpg dialect."""
    return database_url.replace("postgresql://", "postgresql+asyncpg://", 1)


def database_engine(database_url: str, **options: Any) -> AsyncEngine:
    """The SQLAlchemy engine for read models, with the event store's session settings."""
    return create_async_engine(sqlalchemy_url(database_url),
                               connect_args={"server_settings": dict(SESSION_SETTINGS)},
                               **options)
