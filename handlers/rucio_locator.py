"""Where data already is: the ranking's ``DataLocator`` port over Rucio's replica listing.

An RSE *holds* a set of DIDs when it has an AVAILABLE replica of every file of every one of
them (a dataset or container is expanded by Rucio into its files). A DID without files, or
unknown to Rucio, is held nowhere. Ranking then prefers sites close to those RSEs (the
RSE-to-site map is provider configuration, applied by the ranking, not here).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from .rucio_client import Did, FileReplicaStates, RucioNotFound

log = logging.getLogger(__name__)

AVAILABLE = "AVAILABLE"


class ReplicaListing(Protocol):
    async def list_file_replicas(self, did: Did) -> list[FileReplicaStates]: ...


class RucioDataLocator:
    """``DataLocator`` (declared by handlers/ranking.py) answered by Rucio."""

    def __init__(self, rucio: ReplicaListing) -> None:
        self.rucio = rucio

    async def rses_holding(self, dids: Sequence[str]) -> set[str]:
        """The RSEs holding all of ``dids`` (``scope:name``). Rucio being unavailable raises
        ``RucioUnavailable``: the caller ranks without locality rather than guessing."""
        holding: set[str] | None = None
        for text in dids:
            scope, sep, name = text.partition(":")
            if not sep:
                return set()
            try:
                files = await self.rucio.list_file_replicas(Did(scope, name))
            except RucioNotFound:
                log.info("data locator: Rucio does not know %s", text)
                return set()
            if not files:
                return set()
            here: set[str] | None = None
            for replica in files:
                rses = {rse for rse, state in replica.states.items() if state == AVAILABLE}
                here = rses if here is None else here & rses
            holding = here if holding is None else holding & (here or set())
            if not holding:
                return set()
        return holding or set()
