"""Segment analysis (services/wav2vec2/patterns.py) on synthetic audio and frame vectors."""
from __future__ import annotations

import numpy as np
import pytest

from services.wav2vec2 import patterns
from services.wav2vec2.model import frame_count
from tests.unit.wav2vec2_fixtures import tone

WINDOW, HOP, RATE = 400, 320, 16_000
STRIDE = HOP / RATE


def levels(samples: np.ndarray) -> np.ndarray:
    return patterns.frame_levels_db(samples, frame_count(samples.shape[0], WINDOW, HOP), WINDOW, HOP)


def labels_and_bounds(segments):
    return [(s["label"], round(s["start_s"], 2), round(s["end_s"], 2)) for s in segments]


def test_frame_levels_are_the_rms_of_what_each_frame_sees():
    samples = np.concatenate([np.full(3200, 0.1), np.full(3200, 1.0)])
    db = levels(samples)
    assert db[0] == pytest.approx(-20.0) and db[-1] == pytest.approx(0.0)
    # frame 9 sees samples 2880..3280: 320 at 0.1 and 80 at 1.0
    assert db[9] == pytest.approx(10 * np.log10((320 * 0.01 + 80 * 1.0) / 400))


def test_a_tone_between_silences_gives_three_segments_that_tile_the_clip():
    samples = tone(2.0, start=0.5, stop=1.3)
    segments = patterns.activity_segments(levels(samples), STRIDE, 2.0)
    assert [s["label"] for s in segments] == ["silence", "speech", "silence"]
    assert segments[0]["start_s"] == 0.0 and segments[-1]["end_s"] == 2.0
    assert all(a["end_s"] == b["start_s"] for a, b in zip(segments, segments[1:]))
    # a frame counts as speech once its 25 ms window reaches the tone
    assert segments[1]["start_s"] == pytest.approx(0.5, abs=0.03)
    assert segments[1]["end_s"] == pytest.approx(1.3, abs=0.03)


def test_short_gaps_are_bridged_and_short_blips_dropped():
    gap = tone(2.0, start=0.3, stop=1.7) * (np.abs(np.arange(32_000) / RATE - 1.0) > 0.05)
    assert [s["label"] for s in patterns.activity_segments(levels(gap), STRIDE, 2.0)] \
        == ["silence", "speech", "silence"]  # the 100 ms gap is under MIN_SILENCE_S
    blip = tone(2.0, start=0.3, stop=1.0)
    blip[24_000:24_300] = 0.3  # a 19 ms click at 1.5 s, under MIN_SPEECH_S
    assert labels_and_bounds(patterns.activity_segments(levels(blip), STRIDE, 2.0)) \
        == [("silence", 0.0, 0.28), ("speech", 0.28, 1.0), ("silence", 1.0, 2.0)]


def test_digital_silence_is_one_silence_segment():
    assert labels_and_bounds(patterns.activity_segments(levels(np.zeros(16_000)), STRIDE, 1.0)) \
        == [("silence", 0.0, 1.0)]


def test_a_switch_between_two_kinds_of_frame_is_one_change_point():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(16), rng.standard_normal(16)
    frames = np.concatenate([np.tile(a, (40, 1)), np.tile(b, (60, 1))])
    frames += 0.05 * rng.standard_normal(frames.shape)
    points = patterns.change_points(frames, STRIDE)
    assert len(points) == 1
    assert points[0]["time_s"] == pytest.approx(40 * STRIDE)
    assert points[0]["score"] > patterns.Z_THRESHOLD and 0 < points[0]["distance"] <= 2


def test_change_points_keep_the_largest_within_the_minimum_gap():
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(16) for _ in range(3))
    # a -> b at frame 50, b -> c at 53 (60 ms later), c -> a at frame 100
    frames = np.concatenate([np.tile(a, (50, 1)), np.tile(b, (3, 1)), np.tile(c, (47, 1)),
                             np.tile(a, (50, 1))]) + 0.01 * rng.standard_normal((150, 16))
    times = [round(p["time_s"] / STRIDE) for p in patterns.change_points(frames, STRIDE)]
    assert len(times) == 2 and times[0] in (50, 53) and times[1] == 100


def test_steady_or_tiny_inputs_have_no_change_points():
    assert patterns.change_points(np.ones((50, 8)), STRIDE) == []
    assert patterns.change_points(np.random.default_rng(0).standard_normal((2, 8)), STRIDE) == []


def test_analyze_reports_the_share_of_speech():
    samples = tone(2.0, start=0.5, stop=1.5)
    frames = np.random.default_rng(0).standard_normal((frame_count(32_000, WINDOW, HOP), 8))
    result = patterns.analyze(samples, frames, WINDOW, HOP, RATE)
    assert set(result) == {"segments", "change_points", "speech_ratio"}
    assert result["speech_ratio"] == pytest.approx(0.5, abs=0.04)
