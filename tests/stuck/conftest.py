"""The API tests' session fixtures (real OIDC issuers on loopback, one TOSCA validator)."""

from tests.api.conftest import fixture_issuers, fixture_validator

__all__ = ["fixture_issuers", "fixture_validator"]
