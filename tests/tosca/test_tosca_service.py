"""The async facade: validation off the event loop, shared in-flight work, close()."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from tosca_helpers import infn_vm_template, read_corpus

from tosca import Limits, TemplateError, TemplateValidator, ValidatorUnavailable

GOOD = "indigo-paas/tosca-templates/single-vm/single_vm.yaml"


@pytest.fixture
async def validator(resolver_config):
    service = TemplateValidator(
        resolver=resolver_config, workers=2, limits=Limits(timeout_seconds=30.0)
    )
    await service.start()
    yield service
    service.close()


async def test_validate_returns_facts_and_caches(validator) -> None:
    text = read_corpus(GOOD)
    facts = await validator.validate(text, {"num_cpus": 2})
    assert facts.template_name == "Virtual machine"
    assert facts.resources.vcpus == 2
    assert await validator.validate(text, {"num_cpus": 2}) is facts
    # One lookup per request: the first missed, the second hit.
    assert (validator.cache.misses, validator.cache.hits) == (1, 1)


async def test_concurrent_requests_share_one_validation(validator) -> None:
    text = read_corpus(GOOD)
    results = await asyncio.gather(*(validator.validate(text, {"num_cpus": 4}) for _ in range(8)))
    assert all(r is results[0] for r in results)
    others = await asyncio.gather(
        *(validator.validate(text, {"num_cpus": n}) for n in (1, 2, 4)),
        validator.validate(text, {"num_cpus": "many"}),
        return_exceptions=True,
    )
    assert [f.resources.vcpus for f in others[:3]] == [1, 2, 4]
    assert isinstance(others[3], TemplateError)


async def test_a_cached_answer_does_not_queue_behind_running_validations(resolver_config) -> None:
    service = TemplateValidator(
        resolver=resolver_config, workers=1, limits=Limits(timeout_seconds=600.0)
    )
    await service.start()
    good = read_corpus(GOOD)
    facts = await service.validate(good, {})
    # `(a|aa)+$` passes the static guard and backtracks for ages on a long run of a's:
    # one validation holds the only worker, the others wait for it; together they hold
    # every thread that waits on the workers.
    slow_text = infn_vm_template(
        extra_inputs='    name:\n      type: string\n      constraints: [ { pattern: "(a|aa)+$" } ]'
    )
    slow = [
        asyncio.create_task(service.validate(slow_text, {"name": "a" * (80 + i) + "!"}))
        for i in range(service.pool.size + 2)
    ]
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while not service.pool.busy_pids():
            assert asyncio.get_running_loop().time() < deadline, "no validation started"
            await asyncio.sleep(0.01)
        # A deadline only against hanging: the answer must come while the others still run.
        assert await asyncio.wait_for(service.validate(good, {}), 60) is facts
        assert not any(task.done() for task in slow)
    finally:
        service.close()  # waiting validations give up; the running one is killed below
        for pid in service.pool.busy_pids():
            os.kill(pid, signal.SIGKILL)
        await asyncio.gather(*slow, return_exceptions=True)


async def test_the_event_loop_keeps_running_during_validation(validator) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    text = read_corpus("indigo-dc/tosca-types/examples/kubernetes_cluster.yaml")
    await validator.validate(text, {"wn_num": 5})
    task.cancel()
    assert ticks > 0


async def test_errors_are_template_errors(validator) -> None:
    with pytest.raises(TemplateError, match='input "nope" is not declared'):
        await validator.validate(read_corpus(GOOD), {"nope": 1})


async def test_close_refuses_further_work(resolver_config) -> None:
    service = TemplateValidator(resolver=resolver_config, workers=1)
    service.close()
    service.close()  # idempotent
    with pytest.raises(ValidatorUnavailable):
        await service.validate(read_corpus(GOOD), {})
