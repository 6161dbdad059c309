"""The encrypted credential store: user tokens captured when a command is accepted.

Revision ID: 0004
Revises: 0003

Long work (an IM deployment, a Rucio rule) needs the user's credentials after the
request has ended. They never go into events, Kafka or logs: they are sealed with
AES-GCM under a key that is configuration (``key_id`` names which one, so keys can
rotate) and deleted when the work that needed them ends. Losing the key makes the
rows undecryptable: the work fails cleanly, nothing leaks.
"""

from migrations.sql_script import execute_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE credentials (
    owner_id    text        NOT NULL,
    kind        text        NOT NULL,
    key_id      text        NOT NULL,
    nonce       bytea       NOT NULL,
    ciphertext  bytea       NOT NULL,
    expires_at  timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, kind)
);
"""

DOWNGRADE = r"""
DROP TABLE credentials;
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
