"""Segment analysis on the model's frame grid: where there is sound, where things change.

Two simple, explainable measures, both on the frames the model produces
(one every ``hop`` samples, each seeing ``window`` samples):

- Activity segments ("speech" / "silence"). A frame counts as speech when its
  RMS level is within ``BELOW_PEAK_DB`` of the loudest frame and above
  ``FLOOR_DBFS``. This is an energy detector: any loud sound counts as speech.
  Speech runs shorter than ``MIN_SPEECH_S`` become silence, then silences
  shorter than ``MIN_SILENCE_S`` between two speech runs are bridged. The
  segments tile the clip from 0 to its duration.
- Change points: the cosine distance between consecutive frame vectors,
  kept where it stands ``Z_THRESHOLD`` standard deviations above its mean over
  the clip, with at most one point per ``MIN_GAP_S`` (the largest wins).
"""
from __future__ import annotations

from typing import Any

import numpy as np

BELOW_PEAK_DB = 35.0
FLOOR_DBFS = -55.0
MIN_SPEECH_S = 0.06
MIN_SILENCE_S = 0.2
Z_THRESHOLD = 2.0
MIN_GAP_S = 0.2


def analyze(samples: np.ndarray, frames: np.ndarray, window: int, hop: int,
            sample_rate: int) -> dict[str, Any]:
    """Segments and change points of one clip; ``frames`` is (num_frames, hidden)."""
    stride_s = hop / sample_rate
    duration_s = samples.shape[0] / sample_rate
    levels = frame_levels_db(samples, frames.shape[0], window, hop)
    segments = activity_segments(levels, stride_s, duration_s)
    speech_s = sum(s["end_s"] - s["start_s"] for s in segments if s["label"] == "speech")
    return {
        "segments": segments,
        "change_points": change_points(frames, stride_s),
        "speech_ratio": speech_s / duration_s,
    }


def frame_levels_db(samples: np.ndarray, num_frames: int, window: int, hop: int) -> np.ndarray:
    """RMS level in dBFS of the samples each frame sees, from a running sum of squares."""
    energy = np.concatenate([[0.0], np.cumsum(np.square(samples, dtype=np.float64))])
    starts = np.arange(num_frames) * hop
    ends = np.minimum(starts + window, samples.shape[0])
    mean_square = (energy[ends] - energy[starts]) / np.maximum(ends - starts, 1)
    return 10.0 * np.log10(np.maximum(mean_square, 1e-20))


def activity_segments(levels_db: np.ndarray, stride_s: float,
                      duration_s: float) -> list[dict[str, Any]]:
    speech = (levels_db >= levels_db.max() - BELOW_PEAK_DB) & (levels_db >= FLOOR_DBFS)
    speech = _relabel_short_runs(speech, value=True, shorter_than=_frames(MIN_SPEECH_S, stride_s),
                                 interior_only=False)
    speech = _relabel_short_runs(speech, value=False,
                                 shorter_than=_frames(MIN_SILENCE_S, stride_s), interior_only=True)
    runs = _runs(speech)
    return [{
        "label": "speech" if value else "silence",
        "start_s": 0.0 if start == 0 else start * stride_s,
        "end_s": duration_s if stop == speech.shape[0] else stop * stride_s,
    } for value, start, stop in runs]


def change_points(frames: np.ndarray, stride_s: float) -> list[dict[str, float]]:
    """Times (s) where consecutive frame vectors differ unusually, with distance and z-score."""
    if frames.shape[0] < 3:
        return []
    unit = frames / np.maximum(np.linalg.norm(frames, axis=1, keepdims=True), 1e-12)
    distance = 1.0 - np.sum(unit[1:] * unit[:-1], axis=1)  # distance[i]: frame i -> i + 1
    spread = distance.std()
    if spread < 1e-9:
        return []
    score = (distance - distance.mean()) / spread
    gap = _frames(MIN_GAP_S, stride_s)
    chosen: list[int] = []
    for index in np.argsort(-distance, kind="stable"):
        if score[index] < Z_THRESHOLD:
            break
        if all(abs(int(index) - c) >= gap for c in chosen):
            chosen.append(int(index))
    return [{"time_s": (i + 1) * stride_s, "distance": float(distance[i]),
             "score": float(score[i])} for i in sorted(chosen)]


def _frames(seconds: float, stride_s: float) -> int:
    return max(1, round(seconds / stride_s))


def _runs(mask: np.ndarray) -> list[tuple[bool, int, int]]:
    """(value, start, stop) of each run of equal values."""
    edges = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    bounds = np.concatenate([[0], edges, [mask.shape[0]]])
    return [(bool(mask[a]), int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _relabel_short_runs(mask: np.ndarray, value: bool, shorter_than: int,
                        interior_only: bool) -> np.ndarray:
    out = mask.copy()
    for run_value, start, stop in _runs(mask):
        at_edge = start == 0 or stop == mask.shape[0]
        if run_value == value and stop - start < shorter_than and not (interior_only and at_edge):
            out[start:stop] = not value
    return out
