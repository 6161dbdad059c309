"""Errors of the provider domain. The HTTP mapping (suggested per class) belongs to the API; a
Kafka consumer parks the message that raised :class:`InvalidObservation`."""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every provider domain error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidObservation(ProviderError):
    """An observed provider (tree, Feeder message, snapshot) is malformed or partial (400).

    ``problems`` names each problem with where it is (``regions[1].compute_services[0]...``);
    the message joins them. Nothing is changed by an invalid observation.
    """

    def __init__(self, source: str, problems: list[str] | tuple[str, ...]) -> None:
        self.source = source
        self.problems = tuple(problems)
        shown = "; ".join(self.problems[:10])
        more = f" (and {len(self.problems) - 10} more)" if len(self.problems) > 10 else ""
        super().__init__(f"Invalid {source}: {shown}{more}")


class InvalidCommand(ProviderError):
    """A command's values are unacceptable whatever the state (400)."""


class ProviderNotFound(ProviderError):
    """The stream holds no provider (404)."""

    def __init__(self, provider_id: str) -> None:
        super().__init__(f"The provider {provider_id} doesn't exist")
        self.provider_id = provider_id


class AlreadyRegistered(ProviderError):
    """A registration conflicts with the provider already registered under that id (409)."""

    def __init__(self, provider_id: str, detail: str = "") -> None:
        suffix = f": {detail}" if detail else ""
        super().__init__(f"The provider {provider_id} is already registered{suffix}")
        self.provider_id = provider_id


class InvalidRankerAnswer(ProviderError):
    """A ``ranked_providers`` message is malformed or answers another request."""
