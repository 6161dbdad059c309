"""Per-site IM configuration: where a site's infrastructures are created and with which
credentials (the sites file, `ORCH_SITES_FILE`, YAML or JSON).

    sites:
      - provider_id: prov-cnaf        # the Site.provider_id the scheduler ranks
        region: cnaf                  # optional: a region of that provider (none = any)
        iaas_type: OPENSTACK          # legacy deploymentType / iaasType
        endpoint: https://keystone.cnaf.example:5000/v3
        im_url: http://127.0.0.1:18899          # optional: else ORCH_IM_URL
        provider_timeout_seconds: 1800          # optional cap on one attempt
        im:                                     # the IM line
          token: ${USER_TOKEN}                  # or username / password
        clouds:                                 # cloud lines (handlers.im_client kinds)
          - kind: openstack
            id: ost
            host: https://keystone.cnaf.example:5000
            identity_provider: infn-cloud
            project: my-project
            access_token: ${USER_TOKEN}
        service_im:                             # optional: IM line used to list and
          username: orchestrator                # reconcile orphans (no user token then)
          password: secret

`${USER_TOKEN}` anywhere in `im` or `clouds` is replaced by the deployment owner's OIDC
access token, read from the credential store when the header is built and never stored.
A site needing it for a deployment without a stored token fails that attempt cleanly.
The file is re-read when it changes (mtime), so an operator can fix credentials without a
restart. The file holds secrets: it is read, never logged; errors name keys, not values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from handlers.im_client import (
    CloudCredentials,
    ImAuthorization,
    ImCredentials,
    build_authorization,
)

USER_TOKEN = "${USER_TOKEN}"


class SiteConfigError(ValueError):
    """The sites file is unreadable or invalid (the message never holds a value)."""


class MissingUserToken(LookupError):
    """The site's header needs the user's token and none is stored for the deployment."""


class SiteConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    provider_id: str
    region: str | None = None
    iaas_type: str = "OPENSTACK"
    endpoint: str = ""
    im_url: str | None = None
    provider_timeout_seconds: float | None = None
    im: dict[str, str]
    clouds: list[dict[str, Any]] = []
    service_im: dict[str, str] | None = None

    def __repr__(self) -> str:  # the lines hold passwords
        return f"SiteConfig({self.provider_id!r}, region={self.region!r})"

    @property
    def needs_user_token(self) -> bool:
        return USER_TOKEN in msgspec.json.encode([self.im, self.clouds]).decode()

    def authorization(self, user_token: str | None) -> ImAuthorization:
        """IM's header for this site; raises MissingUserToken if it needs one and has none."""
        if self.needs_user_token and not user_token:
            raise MissingUserToken(
                f"site {self.provider_id} needs the user's access token and none is stored")
        im = msgspec.convert(_substitute(self.im, user_token), ImCredentials)
        clouds = [msgspec.convert(_substitute(c, user_token), CloudCredentials)
                  for c in self.clouds]
        return build_authorization(im, clouds)

    def service_authorization(self) -> ImAuthorization | None:
        """A header without any user token, for listing IM's infrastructures (orphans)."""
        line = self.service_im
        if line is None and USER_TOKEN not in msgspec.json.encode(self.im).decode():
            line = self.im
        if line is None:
            return None
        return build_authorization(msgspec.convert(line, ImCredentials))


def _substitute(value: Any, token: str | None) -> Any:
    if isinstance(value, str):
        return value.replace(USER_TOKEN, token) if USER_TOKEN in value and token else value
    if isinstance(value, dict):
        return {k: _substitute(v, token) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, token) for v in value]
    return value


class _SitesFile(msgspec.Struct, forbid_unknown_fields=True):
    sites: list[SiteConfig]


def parse_sites(document: Mapping[str, Any] | Any) -> list[SiteConfig]:
    try:
        sites = msgspec.convert(document, _SitesFile).sites
        for site in sites:  # every line must decode now, not at the first deployment
            site.authorization("token-placeholder")
            site.service_authorization()
    except (msgspec.ValidationError, ValueError, TypeError) as error:
        # msgspec names the path ($.sites[0].im...), not the value
        raise SiteConfigError(f"invalid sites configuration: {error}") from None
    return sites


class SiteCatalog:
    """The sites, by (provider_id, region); a region-less entry matches every region."""

    def __init__(self, sites: list[SiteConfig]) -> None:
        self.sites = list(sites)

    def find(self, provider_id: str, region: str | None) -> SiteConfig | None:
        fallback = None
        for site in self.sites:
            if site.provider_id != provider_id:
                continue
            if site.region == region:
                return site
            if site.region is None:
                fallback = site
        return fallback


class SitesFile:
    """The catalogue from a file, re-read when its modification time changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._mtime: int | None = None
        self._catalog = SiteCatalog([])
        self.catalog()

    def catalog(self) -> SiteCatalog:
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError as error:
            raise SiteConfigError(f"sites file {self.path}: {error.strerror}") from None
        if mtime != self._mtime:
            text = self.path.read_text(encoding="utf-8")
            try:
                document = yaml.safe_load(text)  # JSON is YAML too
            except yaml.YAMLError as error:
                raise SiteConfigError(f"sites file {self.path} is not YAML/JSON: "
                                      f"{type(error).__name__}") from None
            self._catalog = SiteCatalog(parse_sites(document))
            self._mtime = mtime
        return self._catalog
