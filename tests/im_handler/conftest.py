"""A whole system (Postgres, Kafka, relay, projections, API, the IM deployer) against the
real IM peer (Dummy connector), with a sites file of its own per test module.

Sites: `dummy-a`, `dummy-b`, `dummy-c` deploy on IM's Dummy connector; `badcreds` has a
wrong IM password (IM answers 401); `never` is an OpenStack site whose endpoint is a
loopback black hole (IM waits on it forever: the infrastructure stays `pending`) with a
provider timeout of 3 s (`never-long`: the same with 1 h); `needs-token` needs the user's
access token.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from handlers.im_deployer import ImDeployer, ImDeployerSettings
from orchestrator import bootstrap
from tests.api.conftest import fixture_issuers, fixture_validator, harness_settings
from tests.consumers.support import consumer_settings
from tests.im.conftest import ImPeer, fixture_im_peer, fixture_private_im_peer
from tests.im_handler.support import Blackhole, ImHarness, sites_document
from tests.oidc_issuer import LocalIssuer
from tosca import TemplateValidator

__all__ = [
    "fixture_im_peer", "fixture_issuers", "fixture_private_im_peer", "fixture_validator"]


def fast_settings(instance: str, **overrides: Any) -> ImDeployerSettings:
    values: dict[str, Any] = {
        "instance": instance, "poll_initial_s": 0.05, "poll_max_s": 0.5,
        "reconcile_interval_s": 3600.0, "delete_settle_s": 0.3, "unavailable_retries": 1,
        "retry_initial_s": 0.1, "retry_max_s": 0.5}
    values.update(overrides)
    return ImDeployerSettings(**values)


@pytest.fixture(scope="module", name="im_system")
async def fixture_im_system(fx_databases: Any, fx_kafka_bootstrap: str,
                            fx_issuers: tuple[LocalIssuer, LocalIssuer],
                            fx_validator: TemplateValidator, fx_im_peer: ImPeer,
                            tmp_path_factory: pytest.TempPathFactory
                            ) -> AsyncIterator[ImHarness]:
    sites_file = Path(tmp_path_factory.mktemp("sites")) / "sites.yaml"
    blackhole = Blackhole()
    sites_file.write_text(yaml.safe_dump(sites_document(fx_im_peer, blackhole=blackhole.url)))
    prefix = f"imh{uuid.uuid4().hex[:10]}"
    settings = harness_settings(await fx_databases.fresh(), fx_kafka_bootstrap, fx_issuers,
                                topic_prefix=prefix, im_sites_file=str(sites_file))
    system = await bootstrap.build(settings, validator=fx_validator)
    deployer = system.handler("im-deployer")
    assert isinstance(deployer, ImDeployer)
    deployer.settings = fast_settings(prefix)
    stop = asyncio.Event()
    try:
        await bootstrap.start_components(system, stop, consumer_settings(prefix))
        transport = httpx.ASGITransport(app=system.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://127.0.0.1:8080") as client:
            yield ImHarness(system=system, client=client, issuer=fx_issuers[0],
                            second_issuer=fx_issuers[1], peer=fx_im_peer, blackhole=blackhole,
                            sites_file=sites_file, deployer=deployer)
    finally:
        stop.set()
        await asyncio.gather(*system.tasks, return_exceptions=True)
        await system.close()
        blackhole.close()
