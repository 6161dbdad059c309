"""The IM deployer alone in a process, for the crash tests: resumes every deployment from
the log at start-up (as after a crash) and, when told, SIGKILLs itself at one checkpoint.

    python -m tests.im_handler.crash_worker <database_url> <sites_file> <instance> [crash_at]
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from eventstore.command_service import CommandService
from eventstore.store import EventStore, create_pool
from handlers.im_deployer import ImDeployer
from handlers.site_config import SitesFile
from orchestrator.bootstrap import event_registry
from tests.im_handler.conftest import fast_settings


async def main(database_url: str, sites_file: str, instance: str, crash_at: str | None) -> None:
    pool = await create_pool(database_url)

    async def checkpoint(name: str) -> None:
        if name == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    deployer = ImDeployer(commands=CommandService(EventStore(pool), event_registry()),
                          sites=SitesFile(sites_file).catalog,
                          settings=fast_settings(instance, reconcile_interval_s=0.5),
                          checkpoint=checkpoint)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await deployer.run_background(stop)
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3],
                     sys.argv[4] if len(sys.argv) > 4 else None))
