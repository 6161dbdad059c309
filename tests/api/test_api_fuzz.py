"""Schema-driven fuzzing: schemathesis explores every operation of the served OpenAPI
document against a real uvicorn server on loopback (bounded: a few examples per
operation). No answer may be a 5xx (except the deliberately unsupported schedules, 501),
and every error must have the legacy shape."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import uvicorn

from tests.api.support import Harness

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_schemathesis_finds_no_server_error_and_only_legacy_errors(
        api: Harness, tmp_path: Path) -> None:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api.system.app, host="127.0.0.1", port=port,
                                           log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.02)
        user = api.user("fuzzer")
        token = user.issuer.mint({"sub": user.subject, "groups": user.groups,
                                  "aud": user.audience}, lifetime=1800)
        env = dict(os.environ, SCHEMATHESIS_HOOKS="tests.api.schemathesis_hooks",
                   PYTHONPATH=str(ROOT))
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("schemathesis")), "run",
            f"http://127.0.0.1:{port}/orchestrator/openapi/openapi.json",
            "--checks", "not_a_server_error,legacy_error_shape",
            "--max-examples", "20", "--phases", "examples,coverage,fuzzing",
            "--seed", "20261123", "--no-shrink", "--workers", "1",
            "--generation-database", "none", "--request-timeout", "30",
            "--suppress-health-check", "all",
            # Schedules are deliberately 501 (unsupported; test_24 checks their shape).
            "--exclude-path-regex", "/schedules",
            "-H", f"Authorization: Bearer {token}",
            "--report-dir", str(tmp_path), "--no-color",
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(process.communicate(), 600)
        text = output.decode(errors="replace")
        assert process.returncode == 0, text[-6000:]
    finally:
        server.should_exit = True
        await serving
