"""Shared context: the items models leave for each other, and the messages about them.

Items are validated when built and again by the actor that receives them
(``validate()``), so nothing malformed reaches the store.  Construction also
normalises: priority names become numbers, tag collections become frozensets,
and content becomes plain JSON values (numpy scalars and arrays included).
"""
from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .base import Message
from .validation import is_int, is_number, require, require_seconds, require_text

PRIORITY_MIN, PRIORITY_MAX = 1, 10
CRITICAL = PRIORITY_MAX  # never evicted
PRIORITY_NAMES = {"low": 2, "normal": 5, "high": 8, "critical": CRITICAL}
MAX_QUERY_LIMIT = 10_000
_MAX_JSON_DEPTH = 64


class ContextType(str, enum.Enum):
    """Well-known item types; any other non-empty string is allowed too."""

    AUDIO_PARAMETERS = "audio_parameters"
    PROCESSING_REQUIREMENTS = "processing_requirements"
    STYLISTIC_PREFERENCES = "stylistic_preferences"
    GENERATION_PARAMETERS = "generation_parameters"
    TASK_HISTORY = "task_history"
    PROMPT = "prompt"
    TRANSCRIPTION = "transcription"
    FEATURES = "features"


class ChangeKind(str, enum.Enum):
    STORED = "stored"
    UPDATED = "updated"
    DELETED = "deleted"
    EXPIRED = "expired"
    EVICTED = "evicted"


class Order(str, enum.Enum):
    NEWEST = "newest"      # most recently written first
    OLDEST = "oldest"      # least recently written first
    PRIORITY = "priority"  # highest priority first, then newest


# Fields an update may change; id, timestamps and version belong to the manager.
UPDATABLE_FIELDS = frozenset({"type", "content", "source", "priority", "tags", "task_id",
                              "workflow_id", "ttl_s", "sliding_ttl"})


def json_value(value: Any, field_name: str, _path: str | None = None, _depth: int = 0) -> Any:
    """A plain-JSON copy of ``value``; InvalidInput naming ``field_name`` if there is none.

    numpy scalars and arrays become numbers and lists (via ``tolist``), tuples
    become lists.  NaN and infinities are refused: JSON has no spelling for them.
    """
    path = _path or field_name
    if isinstance(value, enum.Enum):
        value = value.value
    require(_depth <= _MAX_JSON_DEPTH, field_name, f"nested deeper than {_MAX_JSON_DEPTH} at {path}")
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        require(math.isfinite(value), field_name, f"{path} is {value!r}, which JSON cannot hold")
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            require(isinstance(key, str), field_name, f"{path} has a non-string key {key!r:.40}")
            out[key] = json_value(item, field_name, f"{path}.{key}", _depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [json_value(item, field_name, f"{path}[{i}]", _depth + 1)
                for i, item in enumerate(value)]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy, without importing it
        return json_value(value.tolist(), field_name, path, _depth)
    require(False, field_name, f"{path} is a {type(value).__name__}, which is not JSON")


def _is_json(value: Any, depth: int = 0) -> bool:
    if depth > _MAX_JSON_DEPTH:
        return False
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_json(v, depth + 1) for v in value)
    return False


def priority_value(value: Any, field_name: str) -> int:
    """1..10, or one of the names low/normal/high/critical."""
    if isinstance(value, str):
        require(value.lower() in PRIORITY_NAMES, field_name,
                f"must be 1-10 or one of {', '.join(PRIORITY_NAMES)}, got {value!r:.40}")
        return PRIORITY_NAMES[value.lower()]
    require(is_int(value) and PRIORITY_MIN <= value <= PRIORITY_MAX, field_name,
            f"must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX} or a name, got {value!r:.40}")
    return int(value)


def _text_set(value: Any, field_name: str) -> frozenset[str]:
    """A frozenset of strings from a string, or any iterable of strings."""
    if isinstance(value, str):
        value = (value,)
    require(isinstance(value, Iterable) and not isinstance(value, Mapping), field_name,
            "must be a collection of strings")
    values = frozenset(v.value if isinstance(v, enum.Enum) else v for v in value)
    for v in values:
        require_text(v, field_name, 128)
    return values


def _require_time(value: Any, field_name: str) -> None:
    require(value is None or (is_number(value) and value >= 0), field_name,
            f"must be a non-negative number of seconds or None, got {value!r:.40}")


def _optional_text(value: Any, field_name: str) -> None:
    if value is not None:
        require_text(value, field_name)


def _set_normalised(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class ContextItem(Message):
    """One piece of shared context.

    ``id``, ``created_at``, ``updated_at``, ``expires_at`` and ``version`` are
    assigned by the manager: whatever a caller puts there is replaced on store.
    ``ttl_s=None`` takes the configured default; ``sliding_ttl=None`` takes the
    configured default (a sliding TTL restarts on every read, not only on writes).
    ``version`` is the manager's global sequence number of the item's last write.
    """

    type: str
    content: Any
    source: str
    priority: int = PRIORITY_NAMES["normal"]
    tags: frozenset[str] = frozenset()
    task_id: str | None = None
    workflow_id: str | None = None
    id: str | None = None
    ttl_s: float | None = None
    sliding_ttl: bool | None = None
    created_at: float | None = None
    updated_at: float | None = None
    expires_at: float | None = None
    version: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.type, enum.Enum):
            _set_normalised(self, "type", self.type.value)
        _set_normalised(self, "priority", priority_value(self.priority, "priority"))
        _set_normalised(self, "tags", _text_set(self.tags, "tags"))
        _set_normalised(self, "content", json_value(self.content, "content"))
        super().__post_init__()

    def validate(self) -> None:
        require_text(self.type, "type", 128)
        require_text(self.source, "source")
        priority_value(self.priority, "priority")
        require(isinstance(self.tags, frozenset) and all(isinstance(t, str) and t for t in self.tags),
                "tags", "must be a frozenset of non-empty strings")
        require(_is_json(self.content), "content", "must be plain JSON (dict, list, str, number, bool, None)")
        _optional_text(self.task_id, "task_id")
        _optional_text(self.workflow_id, "workflow_id")
        _optional_text(self.id, "id")
        require_seconds(self.ttl_s, "ttl_s")
        require(self.sliding_ttl is None or isinstance(self.sliding_ttl, bool), "sliding_ttl",
                "must be a bool or None")
        for name in ("created_at", "updated_at", "expires_at"):
            _require_time(getattr(self, name), name)
        require(is_int(self.version) and self.version >= 0, "version", "must be a non-negative integer")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly form, e.g. for error details."""
        data = dataclasses.asdict(self)
        data["tags"] = sorted(self.tags)
        return data


def normalise_changes(changes: Any, field_name: str = "changes") -> dict[str, Any]:
    """Check an update's field map; content becomes JSON and priority a number."""
    require(isinstance(changes, Mapping) and len(changes) > 0, field_name,
            "must be a non-empty mapping of field names to new values")
    out = dict(changes)
    for key in out:
        require(key in UPDATABLE_FIELDS, f"{field_name}.{key}",
                f"is not updatable (updatable: {', '.join(sorted(UPDATABLE_FIELDS))})")
    if "content" in out:
        out["content"] = json_value(out["content"], f"{field_name}.content")
    if "priority" in out:
        out["priority"] = priority_value(out["priority"], f"{field_name}.priority")
    if "tags" in out:
        out["tags"] = _text_set(out["tags"], f"{field_name}.tags")
    return out


@dataclass(frozen=True)
class ContextFilter(Message):
    """Which items a query, a model context or a subscription wants.

    Every given criterion must hold.  ``tags_mode`` says whether any or all of
    ``tags`` must be present.  ``content`` maps dotted paths to required values:
    ``{"audio.language": "en"}`` means ``content["audio"]["language"] == "en"``
    (a numeric segment indexes a list).  ``*_since`` bounds are inclusive,
    ``*_before`` exclusive.  ``order``, ``limit`` and ``offset`` page a query;
    subscriptions ignore them.
    """

    types: frozenset[str] | None = None
    sources: frozenset[str] | None = None
    task_id: str | None = None
    workflow_id: str | None = None
    min_priority: int | None = None
    tags: frozenset[str] | None = None
    tags_mode: str = "any"
    created_since: float | None = None
    created_before: float | None = None
    updated_since: float | None = None
    updated_before: float | None = None
    content: Mapping[str, Any] | None = None
    order: Order = Order.NEWEST
    limit: int = 100
    offset: int = 0

    def __post_init__(self) -> None:
        for name in ("types", "sources", "tags"):
            if getattr(self, name) is not None:
                _set_normalised(self, name, _text_set(getattr(self, name), name))
        if self.min_priority is not None:
            _set_normalised(self, "min_priority", priority_value(self.min_priority, "min_priority"))
        if self.content is not None:
            _set_normalised(self, "content", json_value(self.content, "content"))
        if isinstance(self.order, str) and not isinstance(self.order, Order):
            require(self.order in {o.value for o in Order}, "order",
                    f"must be one of {', '.join(o.value for o in Order)}, got {self.order!r:.40}")
            _set_normalised(self, "order", Order(self.order))
        super().__post_init__()

    def validate(self) -> None:
        for name in ("types", "sources", "tags"):
            value = getattr(self, name)
            require(value is None or (isinstance(value, frozenset) and value
                                      and all(isinstance(v, str) and v for v in value)),
                    name, "must be None or a non-empty set of non-empty strings")
        _optional_text(self.task_id, "task_id")
        _optional_text(self.workflow_id, "workflow_id")
        if self.min_priority is not None:
            priority_value(self.min_priority, "min_priority")
        require(self.tags_mode in ("any", "all"), "tags_mode", f"must be 'any' or 'all', got {self.tags_mode!r:.40}")
        for name in ("created_since", "created_before", "updated_since", "updated_before"):
            _require_time(getattr(self, name), name)
        if self.content is not None:
            require(isinstance(self.content, dict) and _is_json(self.content), "content",
                    "must map dotted paths to JSON values")
            for path in self.content:
                require(all(path.split(".")), "content", f"path {path!r:.60} has an empty segment")
        require(isinstance(self.order, Order), "order", "must be newest, oldest or priority")
        require(is_int(self.limit) and 1 <= self.limit <= MAX_QUERY_LIMIT, "limit",
                f"must be an integer from 1 to {MAX_QUERY_LIMIT}, got {self.limit!r:.40}")
        require(is_int(self.offset) and self.offset >= 0, "offset", f"must be a non-negative integer, got {self.offset!r:.40}")


def _require_item_id(value: Any) -> None:
    require_text(value, "item_id")


def _require_filter(value: Any) -> None:
    require(isinstance(value, ContextFilter), "filter", "must be a ContextFilter")
    value.validate()


# ---- requests ---------------------------------------------------------------

MAX_IDEMPOTENCY_KEY = 128


def _require_key(value: Any) -> None:
    if value is not None:
        require_text(value, "idempotency_key", MAX_IDEMPOTENCY_KEY)


@dataclass(frozen=True)
class StoreContext(Message):
    """Store (or replace, if its id exists) an item.  Reply: ContextAck.

    Writes (store, update, delete) may carry an ``idempotency_key``: a write sent
    again with a key already applied is not applied again, and is answered with
    the first one's ContextAck (the key is kept with the change, in the same
    transaction, for ``idempotency_ttl_s``)."""

    item: ContextItem
    idempotency_key: str | None = None

    def validate(self) -> None:
        require(isinstance(self.item, ContextItem), "item", "must be a ContextItem")
        self.item.validate()
        _require_key(self.idempotency_key)


@dataclass(frozen=True)
class RetrieveContext(Message):
    """Reply: ContextItemReply."""

    item_id: str

    def validate(self) -> None:
        _require_item_id(self.item_id)


@dataclass(frozen=True)
class QueryContext(Message):
    """Reply: ContextItems."""

    filter: ContextFilter = field(default_factory=ContextFilter)

    def validate(self) -> None:
        _require_filter(self.filter)


@dataclass(frozen=True)
class UpdateContext(Message):
    """Change some fields; ``content`` is a JSON Merge Patch.  Reply: ContextAck.

    With ``expected_version`` the update applies only if it is still the
    item's version (else CONFLICT); without, fields merge and the newest write wins.
    """

    item_id: str
    changes: Mapping[str, Any]
    expected_version: int | None = None
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        _set_normalised(self, "changes", normalise_changes(self.changes))
        super().__post_init__()

    def validate(self) -> None:
        _require_item_id(self.item_id)
        normalise_changes(self.changes)
        require(self.expected_version is None
                or (is_int(self.expected_version) and self.expected_version >= 0),
                "expected_version", "must be a non-negative integer or None")
        _require_key(self.idempotency_key)


@dataclass(frozen=True)
class DeleteContext(Message):
    """Reply: ContextAck."""

    item_id: str
    idempotency_key: str | None = None

    def validate(self) -> None:
        _require_item_id(self.item_id)
        _require_key(self.idempotency_key)


@dataclass(frozen=True)
class GetContextForModel(Message):
    """The context a model kind needs, shaped by its adapter.  Reply: ModelContext.

    ``priority`` is a minimum priority; ``filter`` narrows further.
    """

    model_type: str
    task_id: str | None = None
    priority: int | None = None
    filter: ContextFilter | None = None
    ref: Any = None  # echoed in the reply, so a caller with many requests can match them

    def __post_init__(self) -> None:
        if self.priority is not None:
            _set_normalised(self, "priority", priority_value(self.priority, "priority"))
        super().__post_init__()

    def validate(self) -> None:
        require_text(self.model_type, "model_type", 128)
        _optional_text(self.task_id, "task_id")
        if self.priority is not None:
            priority_value(self.priority, "priority")
        if self.filter is not None:
            _require_filter(self.filter)


@dataclass(frozen=True)
class SubscribeContext(Message):
    """Ask for every matching change.  Reply: ContextSubscribed.

    With ``since_seq`` the reply also carries the logged changes after it.
    """

    filter: ContextFilter = field(default_factory=ContextFilter)
    since_seq: int | None = None

    def validate(self) -> None:
        _require_filter(self.filter)
        require(self.since_seq is None
                or (is_int(self.since_seq) and self.since_seq >= 0), "since_seq", "must be a non-negative integer or None")


@dataclass(frozen=True)
class UnsubscribeContext(Message):
    """Reply: ContextUnsubscribed."""

    subscription_id: str

    def validate(self) -> None:
        require_text(self.subscription_id, "subscription_id")


@dataclass(frozen=True)
class GetContextStats(Message):
    """Reply: ContextStats."""


# ---- replies and events -------------------------------------------------------

@dataclass(frozen=True)
class ContextAck(Message):
    """A write was applied.  ``version`` is the item's version after it (for a
    delete, the version deleted); ``seq`` is the change's sequence number."""

    item_id: str
    version: int
    seq: int


@dataclass(frozen=True)
class ContextItemReply(Message):
    item: ContextItem


@dataclass(frozen=True)
class ContextItems(Message):
    """One page of a query; ``total`` counts every match before paging."""

    items: tuple[ContextItem, ...]
    total: int


@dataclass(frozen=True)
class ModelContext(Message):
    """``data`` as the model's adapter shaped it; ``item_ids`` oldest write first."""

    model_type: str
    data: Mapping[str, Any]
    item_ids: tuple[str, ...]
    ref: Any = None


@dataclass(frozen=True)
class ContextChange(Message):
    """One change a subscription matched; for removals ``item`` is its last state."""

    seq: int
    kind: ChangeKind
    item: ContextItem
    subscription_id: str


@dataclass(frozen=True)
class ContextGap(Message):
    """In a host's stream of changes, where some may be missing: its subscription was
    resumed (after a restart of the context actor or of the runtime) and the change
    log no longer reached back to ``after_seq``. Re-read the state to catch up;
    the changes after ``seq`` follow."""

    after_seq: int | None
    seq: int
    reason: str
    subscription_id: str = ""


@dataclass(frozen=True)
class ContextSubscribed(Message):
    """``missed``: logged changes after ``since_seq``, in order.  ``gap`` is True
    when the log no longer reaches back that far (re-query to catch up)."""

    subscription_id: str
    seq: int
    missed: tuple[ContextChange, ...] = ()
    gap: bool = False


@dataclass(frozen=True)
class ContextUnsubscribed(Message):
    subscription_id: str


@dataclass(frozen=True)
class ContextStats(Message):
    """``bytes`` counts stored bytes: content as stored (compressed when large) plus text fields."""

    items: int
    bytes: int
    evictions: int
    expirations: int
