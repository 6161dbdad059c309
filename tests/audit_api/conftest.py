"""The audit API tests run against the same real system harness as tests/api (fresh
database and topics per module, real OIDC issuers, real TOSCA validator)."""

from tests.api.conftest import fixture_api, fixture_issuers, fixture_validator

__all__ = ["fixture_api", "fixture_issuers", "fixture_validator"]
