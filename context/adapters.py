"""Turning stored items into what one kind of model takes.

An adapter names the item types it reads and shapes them, oldest write first,
into a dict: later items win (contents combine as JSON Merge Patches), the
adapter's defaults fill what no item sets, and bad values raise InvalidInput
naming the field.  Adapters come from the ``grym.context_adapters`` entry
point group, over a built-in map, so they work without installation too.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable, Mapping, Protocol, Sequence

import structlog

from messages.context import ContextItem, ContextType
from messages.validation import is_int, is_number, require

from .merge import merge_patch

ENTRY_POINT_GROUP = "grym.context_adapters"
log = structlog.get_logger(__name__)


class ContextAdapter(Protocol):
    item_types: frozenset[str] | None  # None: every type

    def adapt(self, items: Sequence[ContextItem]) -> dict[str, Any]:
        """Shape ``items`` (oldest write first) for the model."""


def merged_objects(items: Sequence[ContextItem], types: frozenset[str]) -> dict[str, Any]:
    """The contents of ``items`` of ``types`` merged in order; each must be an object."""
    merged: dict[str, Any] = {}
    for item in items:
        if item.type in types:
            require(isinstance(item.content, dict), item.type,
                    f"content of item {item.id} must be an object, got {type(item.content).__name__}")
            merged = merge_patch(merged, item.content)
    return merged


class Wav2Vec2Adapter:
    """Audio parameters for speech recognition, from ``audio_parameters`` and
    ``processing_requirements`` items: sample_rate, channels, language, vocabulary_hints."""

    item_types = frozenset({ContextType.AUDIO_PARAMETERS.value, ContextType.PROCESSING_REQUIREMENTS.value})
    defaults = {"sample_rate": 16_000, "channels": 1, "language": "en", "vocabulary_hints": []}

    def adapt(self, items: Sequence[ContextItem]) -> dict[str, Any]:
        merged = merged_objects(items, self.item_types)
        params = {key: merged.get(key, default) for key, default in self.defaults.items()}
        require(is_int(params["sample_rate"]) and 1_000 <= params["sample_rate"] <= 384_000, "sample_rate",
                f"must be an integer from 1000 to 384000 Hz, got {params['sample_rate']!r:.40}")
        require(is_int(params["channels"]) and 1 <= params["channels"] <= 32, "channels",
                f"must be an integer from 1 to 32, got {params['channels']!r:.40}")
        require(params["language"] is None or (isinstance(params["language"], str)
                                               and 0 < len(params["language"]) <= 35),
                "language", f"must be a language tag or None, got {params['language']!r:.40}")
        hints = params["vocabulary_hints"]
        require(isinstance(hints, list) and all(isinstance(h, str) and h for h in hints),
                "vocabulary_hints", "must be a list of non-empty strings")
        return params


class GenerationAdapter:
    """Prompt, style and sampling parameters for a generator, from ``prompt``,
    ``stylistic_preferences`` and ``generation_parameters`` items.

    A prompt item's content is the text, or an object with a ``text`` key.
    """

    item_types = frozenset({ContextType.PROMPT.value, ContextType.STYLISTIC_PREFERENCES.value,
                            ContextType.GENERATION_PARAMETERS.value})
    default_parameters = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 256}

    def adapt(self, items: Sequence[ContextItem]) -> dict[str, Any]:
        prompt = None
        for item in items:
            if item.type == ContextType.PROMPT.value:
                prompt = item.content.get("text") if isinstance(item.content, dict) else item.content
                require(isinstance(prompt, str), "prompt",
                        f"item {item.id} must hold text or an object with a 'text' string")
        style = merged_objects(items, frozenset({ContextType.STYLISTIC_PREFERENCES.value}))
        parameters = merge_patch(self.default_parameters,
                                 merged_objects(items, frozenset({ContextType.GENERATION_PARAMETERS.value})))
        require(is_number(parameters["temperature"]) and 0.0 <= parameters["temperature"] <= 5.0, "temperature",
                f"must be a number from 0 to 5, got {parameters['temperature']!r:.40}")
        require(is_number(parameters["top_p"]) and 0.0 < parameters["top_p"] <= 1.0, "top_p",
                f"must be a number in (0, 1], got {parameters['top_p']!r:.40}")
        require(is_int(parameters["max_new_tokens"]) and 1 <= parameters["max_new_tokens"] <= 65_536, "max_new_tokens",
                f"must be an integer from 1 to 65536, got {parameters['max_new_tokens']!r:.40}")
        return {"prompt": prompt, "style": style, "parameters": parameters}


class PassThroughAdapter:
    """For model kinds without an adapter: ``{type: merged content}`` for every type."""

    item_types = None

    def adapt(self, items: Sequence[ContextItem]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for item in items:
            data[item.type] = merge_patch(data.get(item.type), item.content)
        return data


BUILT_IN: Mapping[str, Callable[[], ContextAdapter]] = {
    "wav2vec2": Wav2Vec2Adapter,
    "generation": GenerationAdapter,
}


def discover_adapters() -> dict[str, Callable[[], ContextAdapter]]:
    """Built-in adapters, overridden by installed entry points.  A plugin that
    fails to load is logged and skipped: one broken package must not take
    the shared context down."""
    found: dict[str, Callable[[], ContextAdapter]] = dict(BUILT_IN)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[point.name] = point.load()
        except Exception as exc:  # noqa: BLE001 - any import error
            log.warning("context_adapter_load_failed", name=point.name, value=point.value, error=repr(exc))
    return found
