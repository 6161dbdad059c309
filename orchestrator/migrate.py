"""Apply Alembic migrations programmatically (used by the CLI, the run script and tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from orchestrator.settings import ROOT, sqlalchemy_url


def upgrade(database_url: str, revision: str = "head") -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("prepend_sys_path", str(ROOT))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    command.upgrade(config, revision)
