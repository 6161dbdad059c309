"""Configuration from environment variables (prefix ORCH_).

Local runs get their connection strings from `.run/env`, written by
scripts/services.sh with generated passwords; real environment variables win.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

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


class Settings(msgspec.Struct, kw_only=True):
    database_url: str
    kafka_bootstrap: str
    topic_prefix: str = "orchestrator"
    topic_partitions: int = 4
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_base_path: str = ""
    log_level: str = "INFO"

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
        )


def sqlalchemy_url(database_url: str) -> str:
    """The same database for SQLAlchemy's asyncpg dialect."""
    return database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
