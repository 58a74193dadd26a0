"""A Task's data and context -> one validated ``AudioRequest``.

``Task.data`` is either the audio itself (a numpy array, or the bytes of an
audio file: WAV, FLAC, OGG/Vorbis, MP3) or a dict::

    {"audio": array-or-bytes,          # required
     "sample_rate": 44100,             # arrays only; a file's header carries its own
     "downmix": False,                 # average channels instead of refusing them
     "analysis_type": "features",      # transcription | features | patterns
     "layers": [0, 6, 12] or "all",    # features: also pool these hidden states
     "frame_features": False}          # features: also return per-frame vectors

Layer indices follow the model's ``hidden_states``: 0 is the input to the
first transformer layer, i the output of layer i, negative ones count from the
end. (In stable-layer-norm models, e.g. the large ones, the encoder normalises
the top layer once more before the CTC head; ``embedding`` and ``frames`` are
taken after that norm, the top entry of ``layers`` before it.)

Where the data says nothing, ``Task.context`` supplies ``sample_rate`` and
``downmix``; a raw array with no rate anywhere is taken as 16 kHz, the rate
every public wav2vec2 checkpoint expects. Unknown keys are refused, so a typo
does not silently fall back to a default.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from messages.errors import InvalidInput
from messages.task import Task

from .audio import check_rate, load_samples

ANALYSES = ("transcription", "features", "patterns")
# Task types that always run one analysis, and those that take analysis_type.
FIXED_ANALYSIS = {"speech-to-text": "transcription", "audio-feature-extraction": "features"}
DEFAULT_ANALYSIS = {"audio_process": "transcription", "audio_analyze": "patterns"}
DATA_KEYS = ("audio", "sample_rate", "downmix", "analysis_type", "layers", "frame_features")
DEFAULT_SAMPLE_RATE = 16_000


@dataclasses.dataclass(frozen=True)
class RequestRules:
    """What the loaded model and the settings allow."""

    max_seconds: float
    min_seconds: float  # shortest audio that still gives one model frame
    num_layers: int  # transformer layers: hidden-state indices run 0..num_layers


@dataclasses.dataclass(frozen=True)
class AudioRequest:
    analysis: str
    samples: np.ndarray  # mono float64 at ``sample_rate``
    sample_rate: int
    layers: tuple[int, ...] = ()
    frame_features: bool = False

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.sample_rate


def parse_request(task: Task, rules: RequestRules) -> AudioRequest:
    data = task.data if isinstance(task.data, Mapping) else {"audio": task.data}
    unknown = sorted(set(data) - set(DATA_KEYS))
    if unknown:
        raise InvalidInput(f"unknown key {unknown[0]!r} in task data; known keys: "
                           f"{', '.join(DATA_KEYS)}", {"key": unknown[0]})
    if data.get("audio") is None:
        raise InvalidInput("task data has no audio: send a numpy array, audio file bytes "
                           "(WAV, FLAC, OGG, MP3), or a dict with an 'audio' key")
    context = task.context or {}
    analysis = _analysis(task.type, data.get("analysis_type"))
    layers, frame_features = _feature_options(analysis, data, rules.num_layers)
    rate = _sample_rate(data, context)
    downmix = _flag(data, context, "downmix")
    audio = load_samples(data["audio"], rate, downmix=downmix, max_seconds=rules.max_seconds,
                         min_seconds=rules.min_seconds)
    if data.get("sample_rate") is not None and audio.rate != rate:
        raise InvalidInput(f"sample_rate says {rate} Hz but the {audio.container} header says "
                           f"{audio.rate} Hz; leave sample_rate out when sending {audio.container} "
                           "bytes", {"key": "sample_rate"})
    return AudioRequest(analysis, audio.samples, audio.rate, layers, frame_features)


def _analysis(task_type: str, requested: Any) -> str:
    if requested is not None and not (isinstance(requested, str) and requested in ANALYSES):
        raise InvalidInput(f"analysis_type must be one of {', '.join(ANALYSES)}, got {requested!r}",
                           {"key": "analysis_type"})
    fixed = FIXED_ANALYSIS.get(task_type)
    if fixed is not None:
        if requested not in (None, fixed):
            raise InvalidInput(f"task type {task_type!r} always runs {fixed!r}; send "
                               f"analysis_type {requested!r} as an audio_process or "
                               "audio_analyze task", {"key": "analysis_type"})
        return fixed
    return requested or DEFAULT_ANALYSIS.get(task_type, "transcription")


def _feature_options(analysis: str, data: Mapping[str, Any],
                     num_layers: int) -> tuple[tuple[int, ...], bool]:
    layers, frames = data.get("layers"), data.get("frame_features", False)
    if analysis != "features":
        for key in ("layers", "frame_features"):
            if data.get(key) not in (None, False):
                raise InvalidInput(f"{key} applies to analysis_type 'features', not {analysis!r}",
                                   {"key": key})
    if not isinstance(frames, bool):
        raise InvalidInput(f"frame_features must be true or false, got {frames!r:.40}",
                           {"key": "frame_features"})
    return _layer_indices(layers, num_layers), frames


def _layer_indices(layers: Any, num_layers: int) -> tuple[int, ...]:
    """None -> (), "all" -> 0..num_layers, a list -> its indices (negative from the end)."""
    if layers is None:
        return ()
    if isinstance(layers, str) and layers == "all":
        return tuple(range(num_layers + 1))
    problem = (f"layers must be \"all\" or a non-empty list of hidden-state indices from "
               f"{-(num_layers + 1)} to {num_layers} (0 is the input to the first transformer "
               f"layer, {num_layers} the last layer's output), got {layers!r:.60}")
    if not isinstance(layers, (list, tuple)) or not layers:
        raise InvalidInput(problem, {"key": "layers"})
    chosen: list[int] = []
    for index in layers:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool) \
                or not -(num_layers + 1) <= index <= num_layers:
            raise InvalidInput(problem, {"key": "layers"})
        index = int(index) % (num_layers + 1)
        if index not in chosen:
            chosen.append(index)
    return tuple(chosen)


def _sample_rate(data: Mapping[str, Any], context: Mapping[str, Any]) -> int:
    for source, where in ((data, "sample_rate"), (context, "context sample_rate")):
        rate = source.get("sample_rate")
        if rate is not None:
            return check_rate(rate, where)
    return DEFAULT_SAMPLE_RATE


def _flag(data: Mapping[str, Any], context: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, context.get(key, False))
    if not isinstance(value, bool):
        raise InvalidInput(f"{key} must be true or false, got {value!r:.40}", {"key": key})
    return value
