"""Greedy CTC decoding (services/wav2vec2/ctc.py) on hand-made logits."""
from __future__ import annotations

import numpy as np
import pytest
from transformers import Wav2Vec2CTCTokenizer

from services.wav2vec2.checkpoint import vocabulary
from services.wav2vec2.ctc import collapse, greedy_decode
from tests.unit.wav2vec2_fixtures import tiny_checkpoint  # noqa: F401  (fixture)

VOCAB = vocabulary()
BLANK, SPACE = VOCAB["<pad>"], VOCAB["|"]
STRIDE = 0.02


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):  # noqa: F811
    return Wav2Vec2CTCTokenizer.from_pretrained(tiny_checkpoint, local_files_only=True)


def one_hot_logits(tokens: list[str], strength: dict[int, float] | None = None) -> np.ndarray:
    """Frame i picks tokens[i] with logit strength[i] (default 10) over zeros elsewhere."""
    logits = np.zeros((len(tokens), len(VOCAB)), np.float32)
    for frame, token in enumerate(tokens):
        logits[frame, VOCAB[token]] = (strength or {}).get(frame, 10.0)
    return logits


def prob(strength: float) -> float:
    return float(np.exp(strength) / (np.exp(strength) + len(VOCAB) - 1))


def test_collapse_merges_repeats_then_drops_blanks():
    assert collapse(np.array([0, 5, 5, 0, 5, 6, 6, 0, 0]), blank_id=0) == [5, 5, 6]
    assert collapse(np.array([], dtype=int), blank_id=0) == []


def test_text_words_times_and_confidence(tokenizer):
    frames = ["<pad>", "H", "H", "<pad>", "I", "|", "|", "<pad>", "T", "H", "<pad>", "E",
              "<pad>", "<pad>"]
    transcript = greedy_decode(one_hot_logits(frames, {4: 2.0}), tokenizer, STRIDE)
    assert transcript.text == "HI THE"
    assert transcript.token_ids == [VOCAB[t] for t in ("H", "I", "|", "T", "H", "E")]
    assert [(w["word"], w["start_s"], w["end_s"]) for w in transcript.words] == [
        ("HI", pytest.approx(0.02), pytest.approx(0.10)),
        ("THE", pytest.approx(0.16), pytest.approx(0.24))]
    # emitting frames: 1, 2, 4 (the weak one), 5, 6, 8, 9, 11
    assert transcript.confidence == pytest.approx((7 * prob(10.0) + prob(2.0)) / 8)
    assert transcript.words[0]["confidence"] == pytest.approx((2 * prob(10.0) + prob(2.0)) / 3)
    assert transcript.words[1]["confidence"] == pytest.approx(prob(10.0))


def test_a_blank_between_repeats_keeps_a_double_letter(tokenizer):
    transcript = greedy_decode(one_hot_logits(["L", "<pad>", "L", "L"]), tokenizer, STRIDE)
    assert transcript.text == "LL" and transcript.token_ids == [VOCAB["L"]] * 2


def test_all_blank_is_empty_text_with_the_blank_probability_as_confidence(tokenizer):
    transcript = greedy_decode(one_hot_logits(["<pad>"] * 6, {0: 3.0}), tokenizer, STRIDE)
    assert (transcript.text, transcript.words, transcript.token_ids) == ("", [], [])
    assert transcript.confidence == pytest.approx((prob(3.0) + 5 * prob(10.0)) / 6)
