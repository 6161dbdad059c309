"""Limits applied to every template before and while it is parsed.

The defaults follow the bad-input study (reference/tosca-parser-offline.md,
sections 7 and 10): the largest real template is 25 KB, the deepest real YAML
nests 14 collections, no real file uses anchors, aliases or merge keys, and a
real template parses in under 25 ms.
"""

from __future__ import annotations

import msgspec


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    # Text.
    max_template_bytes: int = 256 * 1024  # 10x the largest real template
    max_depth: int = 32  # nested mappings/sequences (block or flow); real files reach 14
    max_yaml_nodes: int = 50_000  # scalars + collections; real templates have < 3,000
    # Inputs (the JSON the client sends with the template).
    max_inputs_bytes: int = 64 * 1024
    # `pattern` constraints on inputs: a static guard against catastrophic
    # backtracking, plus bounded subject length; the worker's wall clock is the backstop.
    max_pattern_length: int = 256
    max_pattern_subject_length: int = 4096
    # Worker process.
    timeout_seconds: float = 5.0  # wall clock per validation
    memory_bytes: int = (
        512 * 1024 * 1024
    )  # RLIMIT_AS of a worker during a validation (idle: ~50 MB)
    # Template shape: inline type sections and `repositories` open ReDoS and type
    # spoofing, and no real template uses them.
    allow_inline_types: bool = False
    # PyYAML (and the legacy Java orchestrator's SnakeYAML) keep the last of
    # duplicate keys silently; 3 real templates have one. Strict mode refuses them.
    reject_duplicate_keys: bool = False

    def cache_key_part(self) -> bytes:
        """Only the limits that can change a result (not the timeout or memory)."""
        return msgspec.json.encode(
            [
                self.max_template_bytes,
                self.max_depth,
                self.max_yaml_nodes,
                self.max_inputs_bytes,
                self.max_pattern_length,
                self.max_pattern_subject_length,
                self.allow_inline_types,
                self.reject_duplicate_keys,
            ]
        )


DEFAULT_LIMITS = Limits()
