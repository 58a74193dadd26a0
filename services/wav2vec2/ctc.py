"""Greedy CTC decoding: text, emitted token ids, confidences and word times.

Confidence is a probability: the mean, over the frames whose most likely
token is not the CTC blank, of that token's softmax probability. A clip where
every frame is blank (nothing said) gets the mean probability of the blank
instead, i.e. how sure the model is that there was nothing to transcribe.
A word's confidence is the same mean over the emitting frames of that word.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Transcript:
    text: str
    token_ids: list[int]  # after collapsing repeats and dropping blanks
    confidence: float
    words: list[dict[str, Any]]  # {"word", "start_s", "end_s", "confidence"}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def collapse(best: np.ndarray, blank_id: int) -> list[int]:
    """CTC's rule: merge runs of the same token, then drop blanks."""
    if best.size == 0:
        return []
    keep = np.ones(best.shape[0], dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(t) for t in best[keep] if t != blank_id]


def greedy_decode(logits: np.ndarray, tokenizer: Any, frame_stride_s: float) -> Transcript:
    """Decode one clip's (frames, vocab) logits with the checkpoint's own tokenizer.

    The tokenizer does the text and word grouping (word delimiter, special
    tokens, casing are checkpoint conventions); word offsets come back in
    frames and are turned into seconds here.
    """
    blank_id = tokenizer.pad_token_id
    probs = softmax(logits.astype(np.float64))
    best = probs.argmax(axis=-1)
    best_prob = probs.max(axis=-1)
    emitting = best != blank_id
    decoded = tokenizer.decode(best.tolist(), output_word_offsets=True)
    words = [{
        "word": w["word"],
        "start_s": float(w["start_offset"] * frame_stride_s),
        "end_s": float(w["end_offset"] * frame_stride_s),
        "confidence": _mean_emitting(best_prob[w["start_offset"]:w["end_offset"]],
                                     emitting[w["start_offset"]:w["end_offset"]]),
    } for w in decoded.word_offsets]
    return Transcript(text=decoded.text, token_ids=collapse(best, blank_id),
                      confidence=_mean_emitting(best_prob, emitting), words=words)


def _mean_emitting(best_prob: np.ndarray, emitting: np.ndarray) -> float:
    chosen = best_prob[emitting] if emitting.any() else best_prob
    return float(chosen.mean())
