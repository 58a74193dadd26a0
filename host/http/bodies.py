"""Request bodies -> task fields: a JSON task, or raw audio with the fields in the query.

Compressed audio (WAV, FLAC, Ogg, MP3) is passed on as the bytes it came as:
the service decodes it. Raw PCM carries no header, so it needs ``sample_rate``
and ``dtype`` (and ``channels`` when interleaved) and becomes a numpy array.
Query parameters that are not task fields become keys of the task data next
to the audio (``?downmix=true``), so the service names any it does not know.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from messages.errors import ErrorCode

from .errors import HttpError, validation_error

AUDIO_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave",
                         "audio/flac", "audio/x-flac", "audio/ogg", "audio/mpeg", "audio/mp3"})
PCM_TYPES = frozenset({"audio/pcm", "application/octet-stream"})
JSON_TYPES = frozenset({"application/json", ""})
PCM_DTYPES = {"float32": "<f4", "float64": "<f8", "int16": "<i2"}
# Query parameters that are the task's own fields, or that describe raw PCM.
TASK_QUERY = frozenset({"id", "priority", "timeout_s", "store_results", "metadata", "arrays",
                        "type"})
PCM_QUERY = frozenset({"sample_rate", "dtype", "channels"})


class TaskBody(BaseModel):
    """``POST /v1/tasks/{type}`` as JSON."""

    model_config = ConfigDict(extra="forbid", strict=True)
    data: Any = Field(None, description="the task's payload, as the service expects it")
    priority: int = Field(5, ge=1, le=10)
    timeout_s: float | None = Field(None, gt=0, description="default: the runtime's")
    metadata: dict[str, Any] = Field(default_factory=dict)
    store_results: bool = Field(False, description="store the result as task_history context")
    id: str | None = Field(None, min_length=1, max_length=256,
                           description="the task id (default: a new one)")


class ServiceTaskBody(TaskBody):
    """``POST /v1/services/{name}/tasks`` as JSON: the task type is in the body."""

    type: str = Field(..., min_length=1, max_length=128)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def new_task_id() -> str:
    return f"http-{uuid.uuid4().hex[:16]}"


def json_task(raw: bytes, model: type[TaskBody]) -> dict[str, Any]:
    """The task fields of a JSON body; malformed JSON 400, a wrong field 422."""
    try:
        parsed = model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None
    return parsed.model_dump()


def audio_task(raw: bytes, media: str, query: Mapping[str, str],
               model: type[TaskBody]) -> dict[str, Any]:
    """The task fields of an audio body: the fields from the query, the audio as data."""
    if not raw:
        raise HttpError(400, ErrorCode.INVALID_INPUT.value, "the request has no audio in its body",
                        {"in": "body"})
    fields = {k: query_value(v) for k, v in query.items() if k in TASK_QUERY - {"arrays"}}
    for name in ("id", "type"):  # text as given, even when it looks like a number
        if name in query:
            fields[name] = query[name]
    extra = {k: query_value(v) for k, v in query.items() if k not in TASK_QUERY | PCM_QUERY}
    if media in PCM_TYPES:
        audio: Any = pcm_samples(raw, query)
        data: Any = {"audio": audio, "sample_rate": _int_param(query, "sample_rate"), **extra}
    else:
        data = {"audio": raw, **extra} if extra else raw
    try:
        parsed = model.model_validate({**fields, "data": None}, strict=True)
    except ValidationError as exc:
        raise validation_error(exc.errors(), "query") from None
    return {**parsed.model_dump(), "data": data}


def pcm_samples(raw: bytes, query: Mapping[str, str]) -> np.ndarray:
    """Little-endian interleaved samples -> (frames,) or (frames, channels)."""
    if "sample_rate" not in query or "dtype" not in query:
        missing = "sample_rate" if "sample_rate" not in query else "dtype"
        raise HttpError(422, ErrorCode.INVALID_INPUT.value,
                        f"{missing}: raw PCM needs ?sample_rate=HZ&dtype="
                        f"{'|'.join(PCM_DTYPES)} (and channels=N when interleaved)",
                        {"field": missing, "in": "query"})
    dtype = query["dtype"]
    if dtype not in PCM_DTYPES:
        raise HttpError(422, ErrorCode.INVALID_INPUT.value,
                        f"dtype: must be one of {', '.join(PCM_DTYPES)}, got {dtype!r:.40}",
                        {"field": "dtype", "in": "query"})
    channels = _int_param(query, "channels") if "channels" in query else 1
    if channels < 1:
        raise HttpError(422, ErrorCode.INVALID_INPUT.value, "channels: must be >= 1",
                        {"field": "channels", "in": "query"})
    width = np.dtype(PCM_DTYPES[dtype]).itemsize * channels
    if len(raw) % width:
        raise HttpError(400, ErrorCode.INVALID_INPUT.value,
                        f"the body is {len(raw)} bytes, not a whole number of {dtype} frames of "
                        f"{channels} channel(s) ({width} bytes each)", {"in": "body"})
    samples = np.frombuffer(raw, dtype=PCM_DTYPES[dtype]).astype(dtype)  # native order, writable
    return samples.reshape(-1, channels) if channels > 1 else samples


def _int_param(query: Mapping[str, str], name: str) -> int:
    try:
        return int(query[name])
    except ValueError:
        raise HttpError(422, ErrorCode.INVALID_INPUT.value,
                        f"{name}: must be a whole number, got {query[name]!r:.40}",
                        {"field": name, "in": "query"}) from None


def query_value(text: str) -> Any:
    """``true``, ``3``, ``0.5``, ``[0, 6]`` and ``{"a": 1}`` as JSON; anything else as text."""
    try:
        return json.loads(text)
    except ValueError:
        return text
