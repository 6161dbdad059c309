"""Consumer bookkeeping: log positions next to Kafka offsets, code version of builds.

Revision ID: 0002
Revises: 0001
"""

from migrations.sql_script import execute_script

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# consumer_offsets.log_tx_id/log_position: the last log position a consumer saw on
# each partition. The relay publishes in log order, so within a partition positions
# only grow: a message at or below it is a republished duplicate (relay restart) and
# is skipped. A rebuilt projection's catch-up consumer starts with this floor at the
# position its replay reached (projection_versions.log_*).
#
# projection_versions.code_version: the projection's VERSION (its table shape) that
# built that version of the tables; version numbers themselves are build numbers.
UPGRADE = r"""
ALTER TABLE consumer_offsets
    ADD COLUMN log_tx_id    xid8,
    ADD COLUMN log_position bigint;
ALTER TABLE projection_versions
    ADD COLUMN code_version integer;
"""

DOWNGRADE = r"""
ALTER TABLE projection_versions DROP COLUMN code_version;
ALTER TABLE consumer_offsets DROP COLUMN log_position, DROP COLUMN log_tx_id;
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
