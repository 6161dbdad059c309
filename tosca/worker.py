"""A pool of warm worker processes that run `tosca.engine.run`, isolated.

Why processes: tosca-parser keeps its error list in a class-level global (not
thread-safe), libyaml can crash the interpreter, and a hostile template can
take unbounded time or memory. Each worker is a fresh interpreter
(`python -m tosca._worker_main`, so nothing is inherited and the caller's main module
is never re-imported, unlike multiprocessing's spawn), imports the parser
once, and serves one request at a time over a socket pair, with msgpack
messages (no pickle from the process that reads hostile input). For each
request it lowers its address-space limit (RLIMIT_AS) to the requested memory
cap; the parent waits at most the wall-clock timeout and then kills it. A
worker that timed out, crashed, hit the memory cap or served
`max_tasks_per_worker` requests is replaced by a fresh one, so a bad template
never leaves the pool degraded.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

from .errors import (
    ImportRejected,
    Problem,
    TemplateError,
    TemplateTooComplex,
    ValidationTimeout,
    ValidatorUnavailable,
)
from .facts import TemplateFacts
from .imports import ResolverConfig
from .limits import Limits

_ERROR_CLASSES: dict[str, type[TemplateError]] = {
    "TemplateError": TemplateError,
    "ImportRejected": ImportRejected,
    "TemplateTooComplex": TemplateTooComplex,
    "ValidationTimeout": ValidationTimeout,
}
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])


class Request(msgspec.Struct, frozen=True):
    request_id: str
    memory_bytes: int
    template_text: str
    inputs: dict[str, Any]
    limits: Limits
    resolver: ResolverConfig
    known_templates: dict[str, str]


class Reply(msgspec.Struct, frozen=True):
    request_id: str
    ok: bool
    facts: TemplateFacts | None = None
    error_class: str = ""
    message: str = ""
    problems: list[tuple[str, str]] = []
    kind: str = ""
    recycle: bool = False


# ---- inside the worker process ------------------------------------------------------------


def _set_memory_limit(limit: int | None) -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if limit is None:
        limit = hard
    elif hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _serve(conn: Connection) -> None:  # pragma: no cover - runs in the worker process
    from . import engine, patches

    patches.apply()
    decoder = msgspec.msgpack.Decoder(Request)
    encoder = msgspec.msgpack.Encoder()
    conn.send_bytes(b"ready")
    while True:
        try:
            request = decoder.decode(conn.recv_bytes())
        except (EOFError, OSError):
            return
        recycle = False
        try:
            _set_memory_limit(request.memory_bytes)
            facts = engine.run(
                request.template_text,
                request.inputs,
                request.limits,
                request.resolver,
                request.known_templates,
            )
            reply = Reply(request.request_id, True, facts=facts)
        except TemplateError as exc:
            reply = Reply(
                request.request_id,
                False,
                error_class=type(exc).__name__,
                message=exc.message,
                problems=[(p.type, p.message) for p in exc.problems],
                kind=exc.kind,
            )
        except MemoryError:
            recycle = True
            reply = Reply(
                request.request_id,
                False,
                error_class="TemplateTooComplex",
                message=(
                    "validating the template needs more than "
                    f"{request.memory_bytes // (1024 * 1024)} MiB of memory"
                ),
                kind="limits",
            )
        except RecursionError:
            recycle = True
            reply = Reply(
                request.request_id,
                False,
                error_class="TemplateTooComplex",
                message="the template is nested too deeply to validate",
                kind="limits",
            )
        except Exception as exc:  # never a trace or a path back to the client
            recycle = True
            reply = Reply(
                request.request_id,
                False,
                error_class="TemplateError",
                message=f"internal validator error ({type(exc).__name__})",
                kind="internal",
            )
        finally:
            try:
                _set_memory_limit(None)
            except (ValueError, OSError):
                recycle = True
        conn.send_bytes(encoder.encode(msgspec.structs.replace(reply, recycle=recycle)))
        if recycle:
            return


def main(argv: list[str]) -> None:  # pragma: no cover - runs in the worker process
    conn = Connection(int(argv[1]))
    try:
        _serve(conn)
    except (EOFError, OSError):
        pass  # the pool closed the connection or was stopped: just exit
    finally:
        try:
            conn.close()
        except OSError:
            pass


# ---- in the parent -------------------------------------------------------------------------


class _Worker:
    def __init__(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [_PACKAGE_PARENT, *filter(None, [env.get("PYTHONPATH")])]
        )
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tosca._worker_main", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        finally:
            child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.ready = False
        self.tasks = 0
        self.in_flight = False

    def wait_ready(self, timeout: float) -> bool:
        if self.ready:
            return True
        try:
            if self.conn.poll(timeout):
                self.ready = self.conn.recv_bytes() == b"ready"
        except (EOFError, OSError):
            self.ready = False
        return self.ready

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            self.conn.close()
        except OSError:
            pass

    def stop(self) -> None:
        try:
            self.conn.close()  # the worker sees EOF and exits
        except OSError:
            pass
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


class WorkerPool:
    """A fixed number of warm validator processes. Thread-safe; `run` blocks its caller."""

    def __init__(
        self,
        size: int | None = None,
        *,
        max_tasks_per_worker: int = 500,
        start_timeout: float = 60.0,
        acquire_timeout: float = 120.0,
    ) -> None:
        self.size = size or max(1, min(4, os.cpu_count() or 1))
        self.max_tasks_per_worker = max_tasks_per_worker
        self.start_timeout = start_timeout
        self.acquire_timeout = acquire_timeout
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._all: set[_Worker] = set()
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(Reply)
        self.replaced = 0  # workers replaced after a timeout, crash, memory cap or recycling
        for _ in range(self.size):
            self._idle.put(self._spawn())

    def _spawn(self) -> _Worker:
        worker = _Worker()
        with self._lock:
            self._all.add(worker)
        return worker

    def _retire(self, worker: _Worker, *, replace: bool) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)
            closed = self._closed
            if replace and not closed:
                self.replaced += 1
        if replace and not closed:
            self._idle.put(self._spawn())

    def _acquire(self) -> _Worker:
        deadline = time.monotonic() + self.acquire_timeout
        while True:
            if self._closed:
                raise ValidatorUnavailable("the template validator is closed")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ValidatorUnavailable("every template validator worker stayed busy")
            try:
                worker = self._idle.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if self._closed:
                self._retire(worker, replace=False)
                raise ValidatorUnavailable("the template validator is closed")
            if worker.alive() and worker.wait_ready(self.start_timeout):
                return worker
            self._retire(worker, replace=True)

    def _release(self, worker: _Worker) -> None:
        if self._closed:
            self._retire(worker, replace=False)
        elif worker.tasks >= self.max_tasks_per_worker:
            worker.stop()
            self._retire(worker, replace=True)
        else:
            self._idle.put(worker)

    def run(
        self,
        template_text: str,
        inputs: dict[str, Any],
        limits: Limits,
        resolver: ResolverConfig,
        known_templates: dict[str, str],
    ) -> TemplateFacts:
        """Validate in a worker; return the facts or raise a TemplateError subclass."""
        request = Request(
            request_id=os.urandom(8).hex(),
            memory_bytes=limits.memory_bytes,
            template_text=template_text,
            inputs=inputs,
            limits=limits,
            resolver=resolver,
            known_templates=known_templates,
        )
        payload = self._encoder.encode(request)
        worker = self._acquire()
        try:
            worker.in_flight = True
            worker.conn.send_bytes(payload)
            if not worker.conn.poll(limits.timeout_seconds):
                self._retire(worker, replace=True)
                raise ValidationTimeout(
                    f"validating the template took longer than {limits.timeout_seconds:g} s "
                    "and was stopped"
                )
            reply = self._decoder.decode(worker.conn.recv_bytes())
        except (EOFError, OSError, msgspec.DecodeError):
            self._retire(worker, replace=True)
            raise TemplateTooComplex(
                "the validator process stopped while reading the template "
                "(it is probably too large, too deep or needs too much memory)"
            ) from None
        finally:
            worker.in_flight = False
        if reply.request_id != request.request_id:
            self._retire(worker, replace=True)
            raise TemplateError("internal validator error (unexpected reply)", kind="internal")
        worker.tasks += 1
        if reply.recycle:
            self._retire(worker, replace=True)
        else:
            self._release(worker)
        if reply.ok and reply.facts is not None:
            return reply.facts
        error_class = _ERROR_CLASSES.get(reply.error_class, TemplateError)
        raise error_class(
            reply.message,
            problems=tuple(Problem(t, m) for t, m in reply.problems),
            kind=reply.kind or None,
        )

    def warm_up(self) -> None:
        """Wait until the idle workers have started (optional; `run` waits anyway)."""
        workers = []
        while True:
            try:
                workers.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for worker in workers:
            worker.wait_ready(self.start_timeout)
            self._idle.put(worker)

    def busy_pids(self) -> list[int]:
        """Processes with a request in flight (for operations and tests)."""
        with self._lock:
            return sorted(w.process.pid for w in self._all if w.in_flight)

    def worker_pids(self) -> list[int]:
        with self._lock:
            return sorted(w.process.pid for w in self._all)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            worker.stop()
            with self._lock:
                self._all.discard(worker)
        # Busy workers are retired by `_release` when their request ends.

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
