"""The IM Authorization header: what `build_authorization` writes is what IM 2.0.0 reads.

The round trip goes through IM's own header code (`IM.rest.routers.get_auth_header`), run
with the IM installed by scripts/services.sh.
"""

from __future__ import annotations

import json
import subprocess

import msgspec
import pytest

from handlers.im_client import (
    CloudCredentials,
    DummyCredentials,
    GenericCredentials,
    ImAuthorization,
    ImCredentials,
    KubernetesCredentials,
    OpenStackOidcCredentials,
    auth_line,
    build_authorization,
)
from tests.im.conftest import IM_RUN, ImPeer

# IM's own header parsing: the REST layer's get_auth_header (REST_URL preset, so it needs
# no request), as the server runs it for every call.
IM_PARSE = """
import json, sys
import IM.rest.REST
from IM.rest.routers import RESTServer, get_auth_header
RESTServer.REST_URL = "http://127.0.0.1/"
headers = json.load(sys.stdin)
print(json.dumps([get_auth_header(None, header).serialize() for header in headers]))
"""


def parse_with_im(authorizations: list[ImAuthorization]) -> list[list[dict[str, str]]]:
    """Each header as IM reads it (one IM import for all: it takes a second or so)."""
    result = subprocess.run(
        [str(IM_RUN / "venv" / "bin" / "python"), "-c", IM_PARSE],
        input=json.dumps([a.header for a in authorizations]), capture_output=True, text=True,
        timeout=120, check=True, cwd=IM_RUN, env={"HOME": str(IM_RUN), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_lines_are_joined_by_backslash_n_as_ims_reference_shows() -> None:
    auth = build_authorization(ImCredentials(username="testuser", password="testpass"),
                               [DummyCredentials()])
    assert auth.header == (
        "id = im; type = InfrastructureManager; username = testuser; password = testpass"
        "\\nid = dummy; type = Dummy"
    )


def test_provider_lines() -> None:
    openstack = OpenStackOidcCredentials(
        id="ost", host="https://keystone.example.org:5000", identity_provider="infn-cc",
        access_token="eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", project="my-project",
        region="RegionOne",
    )
    assert auth_line(openstack.fields()) == (
        "id = ost; type = OpenStack; host = https://keystone.example.org:5000; "
        "username = infn-cc; tenant = openid; password = eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl; "
        "auth_version = 3.x_oidc_access_token; domain = my-project; service_region = RegionOne"
    )
    k8s = KubernetesCredentials(id="k8s", host="https://k8s.example.org:6443", token="abc=")
    assert auth_line(k8s.fields()) == (
        "id = k8s; type = Kubernetes; host = https://k8s.example.org:6443; token = 'abc='"
    )
    assert auth_line(ImCredentials(token="tok").fields()) == (
        "id = im; type = InfrastructureManager; token = tok"
    )


def test_provider_configuration_decodes_by_kind() -> None:
    decoded = msgspec.json.decode(
        b'[{"kind": "kubernetes", "id": "k", "host": "https://k", "token": "t"},'
        b' {"kind": "dummy"},'
        b' {"kind": "generic", "id": "one", "type": "OpenNebula", "values": {"host": "h"}}]',
        type=list[CloudCredentials],
    )
    assert decoded == [
        KubernetesCredentials(id="k", host="https://k", token="t"),
        DummyCredentials(),
        GenericCredentials(id="one", type="OpenNebula", values={"host": "h"}),
    ]


def test_the_header_never_shows_in_repr() -> None:
    auth = build_authorization(ImCredentials(username="u", password="secret-pw"))
    assert "secret-pw" not in repr(auth) and "secret-pw" not in str(auth)
    assert "secret-pw" not in repr([auth])


TRICKY_VALUES = [
    "plain",
    "with space",
    "semi;colon",
    "equals=sign==",
    "single'quote",
    'double"quote',
    "both'\"quotes;and=more",
    "back\\slash",
    "-----BEGIN CERTIFICATE-----\nMIIB\nAbC=\n-----END CERTIFICATE-----",
]


def _with_value(value: str) -> ImAuthorization:
    return build_authorization(
        ImCredentials(username="user", password=value),
        [GenericCredentials(id="site", type="OpenNebula", values={"host": "h", "cert": value})],
    )


@pytest.fixture(scope="module", name="fx_parsed_by_im")
def fixture_parsed_by_im(fx_im_peer: ImPeer) -> dict[str, list[dict[str, str]]]:
    parsed = parse_with_im([_with_value(v) for v in TRICKY_VALUES])
    return dict(zip(TRICKY_VALUES, parsed, strict=True))


@pytest.mark.parametrize("value", TRICKY_VALUES)
def test_values_round_trip_through_ims_parser(
    fx_parsed_by_im: dict[str, list[dict[str, str]]], value: str
) -> None:
    assert fx_parsed_by_im[value] == [
        {"id": "im", "type": "InfrastructureManager", "username": "user", "password": value},
        {"id": "site", "type": "OpenNebula", "host": "h", "cert": value},
    ]


def test_the_reference_header_parses_as_documented(fx_im_peer: ImPeer) -> None:
    auth = build_authorization(ImCredentials(username="testuser", password="testpass"),
                               [DummyCredentials()])
    assert parse_with_im([auth]) == [[
        {"id": "im", "type": "InfrastructureManager", "username": "testuser",
         "password": "testpass"},
        {"id": "dummy", "type": "Dummy"},
    ]]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("a\\nb", "backslash before 'n'"),
        ("ends\\", "at the end"),
        ("file(/etc/passwd)", "file(...)"),
        ("caf\u00e9", "printable ASCII"),
        ("tab\there", "printable ASCII"),
        (" padded", "blanks"),
    ],
)
def test_values_ims_parser_would_change_are_refused(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        build_authorization(ImCredentials(username="u", password=value))


def test_im_credentials_need_a_token_or_username_and_password() -> None:
    with pytest.raises(ValueError, match="token"):
        build_authorization(ImCredentials(username="u"))
