"""Polling with deadlines, and the one Rucio daemon the tests run by hand."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from handlers.rucio_client import ReplicationRule, RucioClient, RucioNotFound, RuleState
from tests.rucio.conftest import RUCIO_RUN

T = TypeVar("T")


async def poll(what: str, probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *,
               within_s: float = 30.0, interval: float = 0.2) -> T:
    """Call `probe` until `done(result)`; fail with the last result after `within_s` s."""
    deadline = time.monotonic() + within_s
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {within_s} s, last: {result!r}")
        await asyncio.sleep(interval)


async def wait_for_rule_state(rucio: RucioClient, rule_id: str,
                              state: RuleState) -> ReplicationRule:
    return await poll(f"rule {rule_id} in state {state.name}",
                      lambda: rucio.get_replication_rule(rule_id),
                      lambda rule: rule.state is state)


async def run_judge_cleaner() -> None:
    """One pass of Rucio's judge-cleaner, which really removes expired rules."""
    env = {**os.environ, "RUCIO_CONFIG": str(RUCIO_RUN / "rucio.cfg"), "TMPDIR": str(RUCIO_RUN)}
    process = await asyncio.create_subprocess_exec(
        str(RUCIO_RUN / "venv" / "bin" / "rucio-judge-cleaner"), "--run-once", env=env,
        cwd=RUCIO_RUN, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    if process.returncode != 0:
        raise AssertionError(f"rucio-judge-cleaner failed: {stderr.decode()[-2000:]}")


async def remove_for_good(rucio: RucioClient, rule_id: str) -> None:
    """Expire the rule now and run the judge-cleaner until Rucio no longer knows it."""
    await rucio.set_rule_lifetime(rule_id, 0)

    async def cleaned() -> bool:
        await run_judge_cleaner()
        try:
            await rucio.get_replication_rule(rule_id)
        except RucioNotFound:
            return True
        return False

    await poll(f"rule {rule_id} removed by the judge-cleaner", cleaned, bool,
               within_s=90, interval=0.5)
