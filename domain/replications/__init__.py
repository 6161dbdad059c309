"""The Replication aggregate: a request for Rucio replication rules, their state, migrations
and removal. Pure: events, commands, state and the decider."""

from domain.event_catalogue import event_tag

from .commands import (
    CancelReplication,
    CompleteMigration,
    FailMigration,
    FailReplication,
    ObserveRuleState,
    RecordRuleCreated,
    RecordRulesRemoved,
    ReplicationCommand,
    RequestMigration,
    RequestReplication,
    UserCommand,
)
from .decider import (
    decide,
    evolve,
    fold,
    initial_state,
    may_manage,
    replication_stream,
    requirement_replication_id,
    validate_request,
)
from .errors import (
    AlreadyExists,
    InvalidRequest,
    InvalidTransition,
    NotPermitted,
    ReplicationError,
    ReplicationNotFound,
)
from .events import (
    EVENT_TYPES,
    EVENT_TYPES_BY_TAG,
    SCHEMA_VERSIONS,
    ReplicationCancelled,
    ReplicationEvent,
    ReplicationFailed,
    ReplicationMigrationCompleted,
    ReplicationMigrationFailed,
    ReplicationMigrationRequested,
    ReplicationRequested,
    ReplicationRuleCreated,
    ReplicationRuleRemoved,
    ReplicationStateObserved,
    RuleState,
    decode_event,
    encode_event,
)
from .state import Generation, ReplicationState, ReplicationStatus

CATEGORY = "replication"

__all__ = [
    "CATEGORY", "EVENT_TYPES", "EVENT_TYPES_BY_TAG", "SCHEMA_VERSIONS", "AlreadyExists",
    "CancelReplication", "CompleteMigration", "FailMigration", "FailReplication", "Generation",
    "InvalidRequest", "InvalidTransition", "NotPermitted", "ObserveRuleState",
    "RecordRuleCreated", "RecordRulesRemoved", "ReplicationCancelled", "ReplicationCommand",
    "ReplicationError", "ReplicationEvent", "ReplicationFailed",
    "ReplicationMigrationCompleted", "ReplicationMigrationFailed",
    "ReplicationMigrationRequested", "ReplicationNotFound", "ReplicationRequested",
    "ReplicationRuleCreated", "ReplicationRuleRemoved", "ReplicationState",
    "ReplicationStateObserved", "ReplicationStatus", "RequestMigration", "RequestReplication",
    "RuleState", "UserCommand", "decide", "decode_event", "encode_event", "event_tag", "evolve",
    "fold", "initial_state", "may_manage", "replication_stream", "requirement_replication_id",
    "validate_request",
]
