"""Indexes for the admin audit query: events by actor and by type, in log order.

Revision ID: 0005
Revises: 0004

The actor lives in the envelope's metadata (never in payloads); an expression
index makes "everything this person did" a range scan instead of a log scan.
"""

from migrations.sql_script import execute_script

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE INDEX events_actor_idx ON events
    ((metadata->>'actor_issuer'), (metadata->>'actor_subject'), position);
CREATE INDEX events_type_idx ON events (type, position);
"""

DOWNGRADE = r"""
DROP INDEX events_type_idx;
DROP INDEX events_actor_idx;
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
