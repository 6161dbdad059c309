"""Async facade for the API and handlers: validation off the event loop.

    validator = TemplateValidator(workers=2)
    facts = await validator.validate(template_text, {"num_cpus": 2})
    validator.close()

The parsing runs in the validator's own worker processes; the waiting happens
in a small dedicated thread pool so the event loop never blocks. Concurrent
requests for the same (template, inputs) share one validation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Mapping
from typing import Any

from .errors import TemplateError, ValidatorUnavailable
from .facts import TemplateFacts
from .imports import ImportResolver, ResolverConfig
from .limits import DEFAULT_LIMITS, Limits
from .validate import FactsCache, as_resolver, cached_outcome, prepare, run_and_cache
from .worker import WorkerPool


class TemplateValidator:
    def __init__(
        self,
        *,
        limits: Limits = DEFAULT_LIMITS,
        resolver: ImportResolver | ResolverConfig | None = None,
        known_templates: Mapping[str, str] | None = None,
        workers: int | None = None,
        cache_size: int = 1024,
        max_tasks_per_worker: int = 500,
    ) -> None:
        self.limits = limits
        self.resolver = as_resolver(resolver)
        self.known_templates = dict(known_templates or {})
        self.pool = WorkerPool(workers, max_tasks_per_worker=max_tasks_per_worker)
        self.cache = FactsCache(cache_size)
        # These threads only wait on the workers' pipes: one per worker, plus one
        # waiting for a worker to free up.
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.pool.size + 1, thread_name_prefix="tosca-validator"
        )
        # The cheap preparation (size checks, cache key) has its own thread, so a
        # cached answer never queues behind validations that are waiting on workers.
        self._prepare_thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tosca-prepare"
        )
        self._inflight: dict[str, asyncio.Future[TemplateFacts]] = {}
        self._closed = False

    async def start(self) -> None:
        """Optional: wait until the worker processes are up (the first call otherwise pays it)."""
        await asyncio.get_running_loop().run_in_executor(self._threads, self.pool.warm_up)

    async def validate(
        self,
        template_text: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        limits: Limits | None = None,
    ) -> TemplateFacts:
        if self._closed:
            raise ValidatorUnavailable("the template validator is closed")
        limits = limits or self.limits
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(
            self._prepare_thread,
            prepare,
            template_text,
            inputs,
            limits,
            self.resolver,
            self.known_templates,
        )
        cached = cached_outcome(self.cache, prepared.key)
        if cached is not None:
            return cached
        running = self._inflight.get(prepared.key)
        if running is None:
            running = loop.run_in_executor(
                self._threads, run_and_cache, prepared, limits, self.pool, self.cache
            )
            self._inflight[prepared.key] = running
            running.add_done_callback(functools.partial(self._finished, prepared.key))
        # A cancelled caller must not cancel the validation others are waiting for.
        try:
            return await asyncio.shield(running)
        except TemplateError as exc:
            raise exc.fresh() from None

    def _finished(self, key: str, done: asyncio.Future[TemplateFacts]) -> None:
        self._inflight.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here, so an unawaited failure is not logged as lost

    def close(self) -> None:
        """Stop the worker processes (idempotent); later calls raise ValidatorUnavailable."""
        if self._closed:
            return
        self._closed = True
        self.pool.close()
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._prepare_thread.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> TemplateValidator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
