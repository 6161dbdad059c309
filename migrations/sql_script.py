"""Run a multi-statement SQL script inside the migration's transaction.

asyncpg sends `op.execute` as one prepared statement, which refuses several
commands; its simple-query `execute` does not. Alembic runs migrations in a
greenlet under SQLAlchemy's asyncio bridge, so `await_only` can call it.
"""

from alembic import op
from sqlalchemy.util import await_only


def execute_script(sql: str) -> None:
    driver_connection = op.get_bind().connection.driver_connection
    await_only(driver_connection.execute(sql))
