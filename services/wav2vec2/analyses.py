"""One clip's model outputs -> the result dict of the analysis its task asked for.

Results hold only plain Python values and float32 numpy arrays, so they
pickle across processes. Every result carries ``analysis_type``,
``duration_s`` (of the audio as sent), ``num_frames`` and ``frame_stride_s``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import patterns
from .ctc import greedy_decode
from .model import FrameOutputs, LoadedModel
from .requests import AudioRequest


def build_result(request: AudioRequest, waveform: np.ndarray, outputs: FrameOutputs,
                 loaded: LoadedModel) -> dict[str, Any]:
    """``waveform`` is the request's audio at the model rate, as the model saw it."""
    result: dict[str, Any] = {
        "analysis_type": request.analysis,
        "duration_s": request.duration_s,
        "num_frames": int(outputs.hidden.shape[0]),
        "frame_stride_s": loaded.frame_stride_s,
    }
    if request.analysis == "transcription":
        result.update(_transcription(outputs, loaded))
    elif request.analysis == "features":
        result.update(_features(request, outputs))
    else:
        result.update(patterns.analyze(waveform, outputs.hidden, loaded.window_samples,
                                       loaded.hop_samples, loaded.sample_rate))
    return result


def _transcription(outputs: FrameOutputs, loaded: LoadedModel) -> dict[str, Any]:
    transcript = greedy_decode(outputs.logits, loaded.tokenizer, loaded.frame_stride_s)
    return {"text": transcript.text, "confidence": transcript.confidence,
            "words": transcript.words, "token_ids": transcript.token_ids}


def _features(request: AudioRequest, outputs: FrameOutputs) -> dict[str, Any]:
    """Mean over time of the last hidden state (what the CTC head reads), plus the
    requested layers (see ``requests`` for their numbering) and per-frame vectors."""
    result: dict[str, Any] = {"embedding": _mean_over_time(outputs.hidden),
                              "hidden_size": int(outputs.hidden.shape[1])}
    if request.layers:
        result["layer_embeddings"] = {i: _mean_over_time(outputs.layers[i]) for i in request.layers}
    if request.frame_features:
        result["frames"] = outputs.hidden.astype(np.float32, copy=True)
        if request.layers:
            result["layer_frames"] = {i: outputs.layers[i].astype(np.float32, copy=True)
                                      for i in request.layers}
    return result


def _mean_over_time(frames: np.ndarray) -> np.ndarray:
    return frames.mean(axis=0, dtype=np.float64).astype(np.float32)
