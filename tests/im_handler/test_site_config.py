"""The sites file: parsing, lookup by provider and region, the IM header per site."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from handlers.site_config import (
    MissingUserToken,
    SiteCatalog,
    SiteConfigError,
    SitesFile,
    parse_sites,
)

OPENSTACK_SITE = {
    "provider_id": "prov-cnaf", "region": "cnaf", "iaas_type": "OPENSTACK",
    "endpoint": "https://keystone.cnaf.example:5000/v3",
    "im": {"token": "${USER_TOKEN}"},
    "clouds": [{"kind": "openstack", "id": "ost", "host": "https://keystone.cnaf.example:5000",
                "identity_provider": "infn-cloud", "project": "p1",
                "access_token": "${USER_TOKEN}"}],
    "service_im": {"username": "orchestrator", "password": "s3cret"},
}
KUBERNETES_SITE = {
    "provider_id": "prov-k8s", "iaas_type": "KUBERNETES", "endpoint": "https://k8s.example",
    "im": {"username": "orchestrator", "password": "s3cret"},
    "clouds": [{"kind": "kubernetes", "id": "k8s", "host": "https://k8s.example",
                "token": "static-cluster-token"}],
}


def test_openstack_site_header_carries_the_user_token_in_both_lines() -> None:
    [site] = parse_sites({"sites": [OPENSTACK_SITE]})
    assert site.needs_user_token
    header = site.authorization("user-access-token").header
    im_line, cloud_line = header.split("\\n")
    assert im_line == "id = im; type = InfrastructureManager; token = user-access-token"
    assert cloud_line == (
        "id = ost; type = OpenStack; host = https://keystone.cnaf.example:5000; "
        "username = infn-cloud; tenant = openid; password = user-access-token; "
        "auth_version = 3.x_oidc_access_token; domain = p1")
    assert "user-access-token" not in repr(site.authorization("user-access-token"))
    assert "s3cret" not in repr(site)


def test_a_site_needing_the_user_token_without_one_is_refused() -> None:
    [site] = parse_sites({"sites": [OPENSTACK_SITE]})
    with pytest.raises(MissingUserToken):
        site.authorization(None)
    # listing for orphans uses the service IM line, never a user token
    service = site.service_authorization()
    assert service is not None
    assert service.header == "id = im; type = InfrastructureManager; username = orchestrator; " \
                             "password = s3cret"


def test_kubernetes_site_needs_no_user_token() -> None:
    [site] = parse_sites({"sites": [KUBERNETES_SITE]})
    assert not site.needs_user_token
    assert site.authorization(None).header.endswith(
        "id = k8s; type = Kubernetes; host = https://k8s.example; token = static-cluster-token")
    assert site.service_authorization() is not None  # the IM line itself


def test_lookup_prefers_the_exact_region_then_a_regionless_entry() -> None:
    regionless = {**KUBERNETES_SITE, "provider_id": "prov-cnaf"}
    catalog = SiteCatalog(parse_sites({"sites": [regionless, OPENSTACK_SITE]}))
    assert catalog.find("prov-cnaf", "cnaf").region == "cnaf"  # type: ignore[union-attr]
    assert catalog.find("prov-cnaf", "other").region is None  # type: ignore[union-attr]
    assert catalog.find("prov-unknown", None) is None


@pytest.mark.parametrize("document", [
    {"sites": [{**KUBERNETES_SITE, "unexpected": 1}]},
    {"sites": [{**KUBERNETES_SITE, "clouds": [{"kind": "no-such-kind"}]}]},
    {"sites": [{**KUBERNETES_SITE, "im": {"username": "only-a-user"}}]},
    {"sites": [{**KUBERNETES_SITE, "im": {"username": "u", "password": "file(/etc/passwd)"}}]},
    {"nothing": []},
])
def test_invalid_files_are_refused_without_echoing_secrets(document: dict) -> None:
    with pytest.raises(SiteConfigError) as error:
        parse_sites(document)
    assert "s3cret" not in str(error.value) and "/etc/passwd" not in str(error.value)


def test_the_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "sites.json"
    path.write_text(yaml.safe_dump({"sites": [KUBERNETES_SITE]}))
    sites = SitesFile(path)
    assert [s.provider_id for s in sites.catalog().sites] == ["prov-k8s"]
    before = path.stat().st_mtime_ns
    while path.stat().st_mtime_ns == before:
        path.write_text(yaml.safe_dump({"sites": [KUBERNETES_SITE, OPENSTACK_SITE]}))
    assert [s.provider_id for s in sites.catalog().sites] == ["prov-k8s", "prov-cnaf"]
    path.write_text("sites: [")
    with pytest.raises(SiteConfigError):
        sites.catalog()
