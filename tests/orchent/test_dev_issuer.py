"""The development OIDC issuer (orchestrator/dev_issuer.py): served on loopback, trusted by
the server only when asked for, its tokens accepted through the ordinary verification path,
and ``orchestrator dev-token`` for curl users."""

from __future__ import annotations

import asyncio
import os
import sys

import httpx
import msgspec
import pytest
from jose import jwt

from orchestrator import cli
from orchestrator.dev_issuer import DEV_ADMIN_GROUP, DevIssuer
from orchestrator.settings import Settings
from tests.api.support import TEMPLATE
from tests.orchent.conftest import PREFIX, Server


async def test_discovery_and_jwks_are_served_on_loopback(dev_issuer: DevIssuer) -> None:
    async with httpx.AsyncClient() as client:
        discovery = (await client.get(
            f"{dev_issuer.issuer}/.well-known/openid-configuration")).json()
        jwks = (await client.get(discovery["jwks_uri"])).json()
    assert dev_issuer.issuer.startswith("http://127.0.0.1:")
    assert discovery["issuer"] == dev_issuer.issuer
    assert [key["kid"] for key in jwks["keys"]] == [dev_issuer.kid]
    assert all("d" not in key for key in jwks["keys"])  # public parts only


async def test_its_tokens_work_for_create_list_and_delete(server: Server) -> None:
    token = server.issuer.mint("curl-user", groups=["g1"])
    headers = {"Authorization": f"Bearer {token}"}
    created = await server.client.post(f"{PREFIX}/deployments", headers=headers,
                                       json={"template": TEMPLATE, "userGroup": "g1"})
    assert created.status_code == 201, created.text
    listed = await server.client.get(f"{PREFIX}/deployments?createdBy=me", headers=headers)
    assert [d["uuid"] for d in listed.json()["content"]] == [created.json()["uuid"]]
    deleted = await server.client.delete(
        f"{PREFIX}/deployments/{created.json()['uuid']}", headers=headers)
    assert deleted.status_code == 204


async def test_a_token_of_a_restarted_issuer_is_refused(server: Server) -> None:
    with DevIssuer() as other:  # a new key pair and another port: another issuer
        token = other.mint("mallory", groups=["g1"])
    response = await server.client.get(f"{PREFIX}/deployments",
                                       headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


async def test_dev_token_command_asks_the_running_issuer(server: Server) -> None:
    env = {**os.environ, "ORCH_DEV_ISSUER_PORT": str(server.issuer.port)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator.cli", "dev-token", "--sub", "alice",
        "--groups", "g1,g2", "--admin", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    token = out.decode().strip()
    claims = jwt.get_unverified_claims(token)
    assert claims["iss"] == server.issuer.issuer and claims["sub"] == "alice"
    assert claims["groups"] == ["g1", "g2", DEV_ADMIN_GROUP]
    assert "offline_access" in claims["scope"].split()
    info = await server.client.get(f"{PREFIX}/deployments",
                                   headers={"Authorization": f"Bearer {token}"})
    assert info.status_code == 200


async def test_dev_token_without_a_running_issuer_says_so() -> None:
    with DevIssuer() as stopped:
        port = stopped.port
    env = {**os.environ, "ORCH_DEV_ISSUER_PORT": str(port)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator.cli", "dev-token", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1 and not out
    assert "ORCH_DEV_ISSUER=1" in err.decode()


@pytest.mark.parametrize("body", [{"groups": ["g1"]}, {"sub": "a", "lifetime": 10**9},
                                  {"sub": "a", "groups": [1]}, ["not", "an", "object"]])
async def test_bad_token_requests_are_a_400(dev_issuer: DevIssuer, body: object) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{dev_issuer.issuer}/dev/token", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def _settings(**values: object) -> Settings:
    return Settings(database_url="postgresql://unused", kafka_bootstrap="unused", **values)


def test_the_server_trusts_it_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_DEV_ISSUER", raising=False)
    monkeypatch.setattr("orchestrator.settings._local_env", dict)
    assert cli._start_dev_issuer(_settings()) is None
    monkeypatch.setenv("ORCH_DEV_ISSUER", "0")
    assert cli._start_dev_issuer(_settings()) is None


def test_it_is_refused_when_the_api_listens_beyond_loopback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_DEV_ISSUER", "1")
    with pytest.raises(SystemExit, match="loopback only"):
        cli._start_dev_issuer(_settings(api_host="0.0.0.0"))


def test_when_asked_it_is_trusted_besides_the_configured_issuers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from api.auth import AuthSettings, TrustedIssuer

    monkeypatch.setenv("ORCH_DEV_ISSUER", "1")
    monkeypatch.setenv("ORCH_DEV_ISSUER_PORT", "0")  # any free port
    configured = TrustedIssuer(issuer="https://iam.example/")
    started = cli._start_dev_issuer(_settings(auth=AuthSettings(issuers=(configured,))))
    assert started is not None
    issuer, settings = started
    try:
        assert settings.auth.issuers == (
            configured, TrustedIssuer(issuer=issuer.issuer, admin_group=DEV_ADMIN_GROUP))
        assert msgspec.structs.replace(settings, auth=AuthSettings(issuers=(configured,))
                                       ) == _settings(auth=AuthSettings(issuers=(configured,)))
    finally:
        issuer.stop()
