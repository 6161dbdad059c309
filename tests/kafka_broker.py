"""A private Apache Kafka broker for tests that stop and start the broker.

Started by scripts/services.sh itself (same jars, same configuration), on free
loopback ports with its data in a temporary directory, so restarting it cannot
disturb the shared broker other tests use.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from orchestrator.settings import ROOT

SERVICES = ROOT / "scripts" / "services.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateKafka:
    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.env = {
            **os.environ,
            "ORCH_KAFKA_DIR": str(directory),
            "ORCH_KAFKA_PORT": str(self.port),
            "ORCH_KAFKA_CONTROLLER_PORT": str(_free_port()),
        }
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _services(self, action: str) -> None:
        subprocess.run(["bash", str(SERVICES), action, "kafka"], env=self.env, check=True,
                       stdout=subprocess.DEVNULL, timeout=180)

    def start(self) -> None:
        self._services("up")

    def stop(self) -> None:
        self._services("down")
