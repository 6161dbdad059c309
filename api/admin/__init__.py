"""Additive admin and audit API: usage statistics, the global audit query, the log export,
tamper verification and audit replays. Reaches read models only through ``ports``."""
