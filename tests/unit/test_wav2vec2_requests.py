"""Task data and context -> AudioRequest (services/wav2vec2/requests.py), without a model."""
from __future__ import annotations

import numpy as np
import pytest

from messages.errors import InvalidInput
from messages.task import Task
from services.wav2vec2.requests import RequestRules, parse_request
from tests.unit.wav2vec2_fixtures import pcm16_wav, tone

RULES = RequestRules(max_seconds=30.0, min_seconds=0.025, num_layers=2)
AUDIO = tone(0.5)


def parse(task_type="audio_process", data=None, context=None):
    return parse_request(Task("t1", task_type, AUDIO if data is None else data, context=context),
                         RULES)


@pytest.mark.parametrize("task_type, analysis", [
    ("speech-to-text", "transcription"), ("audio-feature-extraction", "features"),
    ("audio_process", "transcription"), ("audio_analyze", "patterns"),
])
def test_each_task_type_has_its_default_analysis(task_type, analysis):
    assert parse(task_type).analysis == analysis


@pytest.mark.parametrize("task_type", ["audio_process", "audio_analyze"])
@pytest.mark.parametrize("analysis", ["transcription", "features", "patterns"])
def test_flexible_task_types_take_analysis_type(task_type, analysis):
    assert parse(task_type, {"audio": AUDIO, "analysis_type": analysis}).analysis == analysis


def test_fixed_task_types_refuse_another_analysis():
    with pytest.raises(InvalidInput, match="always runs 'transcription'"):
        parse("speech-to-text", {"audio": AUDIO, "analysis_type": "features"})
    assert parse("speech-to-text", {"audio": AUDIO, "analysis_type": "transcription"}).analysis \
        == "transcription"


@pytest.mark.parametrize("data, phrase", [
    ({"audio": AUDIO, "analysis_type": "summary"}, "analysis_type must be one of"),
    ({"audio": AUDIO, "sampel_rate": 8000}, "unknown key 'sampel_rate'"),
    ({"sample_rate": 8000}, "no audio"),
    ({"audio": AUDIO, "sample_rate": 0}, "sample_rate must be a whole number of Hz"),
    ({"audio": AUDIO, "sample_rate": -16000}, "sample_rate must be a whole number of Hz"),
    ({"audio": AUDIO, "sample_rate": 16000.5}, "sample_rate must be a whole number of Hz"),
    ({"audio": AUDIO, "sample_rate": True}, "sample_rate must be a whole number of Hz"),
    ({"audio": AUDIO, "downmix": "yes"}, "downmix must be true or false"),
    ({"audio": AUDIO, "layers": [0, 1]}, "layers applies to analysis_type 'features'"),
    ({"audio": AUDIO, "frame_features": True}, "frame_features applies to analysis_type"),
])
def test_bad_task_data_is_refused(data, phrase):
    with pytest.raises(InvalidInput, match=phrase):
        parse("audio_process", data)


def test_missing_task_data_is_refused():
    with pytest.raises(InvalidInput, match="no audio"):
        parse_request(Task("t1", "speech-to-text", None), RULES)


def test_layers_all_lists_every_hidden_state_and_negative_indices_count_from_the_end():
    assert parse("audio-feature-extraction", {"audio": AUDIO, "layers": "all"}).layers == (0, 1, 2)
    request = parse("audio-feature-extraction", {"audio": AUDIO, "layers": [-1, 0, 2, np.int64(1)]})
    assert request.layers == (2, 0, 1)  # -1 and 2 are the same layer, kept once


@pytest.mark.parametrize("layers", [[3], [-4], [], "last", [0.5], [True], 1])
def test_layer_indices_outside_the_model_are_refused(layers):
    with pytest.raises(InvalidInput, match="layers must be"):
        parse("audio-feature-extraction", {"audio": AUDIO, "layers": layers})


def test_sample_rate_comes_from_data_then_context_then_16k():
    assert parse(data={"audio": AUDIO}).sample_rate == 16_000
    assert parse(data={"audio": AUDIO}, context={"sample_rate": 8000}).sample_rate == 8000
    assert parse(data={"audio": AUDIO, "sample_rate": 22_050},
                 context={"sample_rate": 8000}).sample_rate == 22_050


def test_a_bad_context_sample_rate_is_named_as_context():
    with pytest.raises(InvalidInput, match="context sample_rate must be"):
        parse(data=AUDIO, context={"sample_rate": "fast"})


def test_context_downmix_applies_unless_the_data_says_otherwise():
    stereo = np.stack([AUDIO, AUDIO])
    assert parse(data=stereo, context={"downmix": True}).samples.shape == (8000,)
    with pytest.raises(InvalidInput, match="2 channels"):
        parse(data={"audio": stereo, "downmix": False}, context={"downmix": True})


def test_wav_header_rate_wins_over_context_but_must_agree_with_the_data():
    wav = pcm16_wav(tone(0.5, rate=8000), 8000)
    assert parse(data=wav, context={"sample_rate": 44_100}).sample_rate == 8000
    assert parse(data={"audio": wav, "sample_rate": 8000}).sample_rate == 8000
    with pytest.raises(InvalidInput, match="sample_rate says 16000 Hz but the WAV header says 8000"):
        parse(data={"audio": wav, "sample_rate": 16_000})


def test_a_wav_header_rate_outside_the_audio_range_is_refused():
    with pytest.raises(InvalidInput, match="the WAV header's sample rate must be .* got 100"):
        parse(data=pcm16_wav(np.zeros(100), 100))


def test_duration_is_that_of_the_audio_as_sent():
    assert parse(data={"audio": tone(1.5, rate=44_100), "sample_rate": 44_100}).duration_s == 1.5
