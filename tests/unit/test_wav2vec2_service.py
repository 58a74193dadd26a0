"""Wav2Vec2Service end to end on a random-weight tiny checkpoint, loaded by from_pretrained."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import soundfile
import torch
import transformers
from transformers import Wav2Vec2ForCTC

from messages.errors import (ExecutionError, InitError, InvalidInput, InvalidTaskType,
                             ServiceUnavailable)
from messages.task import Task
from services.wav2vec2 import model as model_module
from services.wav2vec2 import model as model_module, service as service_module
from services.wav2vec2.checkpoint import RANDOM_WEIGHTS_MARKER, main, model_config
from services.wav2vec2.model import frame_count, run_batch
from services.wav2vec2.service import Wav2Vec2Service
from services.wav2vec2.settings import Wav2Vec2Settings
from services.wav2vec2.timing import time_forward
from tests.unit.wav2vec2_fixtures import (audio_file, group_norm_checkpoint,  # noqa: F401
                                          pcm16_wav, start_service, tiny_checkpoint,
                                          tiny_service, tone)

CLIP = tone(1.0, start=0.3, stop=0.7)


def run_one(service, task_type, data, context=None):
    outcome = service.execute_batch([Task("t", task_type, data, context=context)])[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def assert_same_result(batched: dict, alone: dict) -> None:
    assert batched.keys() == alone.keys()
    for key, value in alone.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_allclose(batched[key], value, atol=1e-4)
        elif isinstance(value, dict) and key in ("layer_embeddings", "layer_frames"):
            assert batched[key].keys() == value.keys()
            for layer in value:
                np.testing.assert_allclose(batched[key][layer], value[layer], atol=1e-4)
        elif isinstance(value, float):
            assert batched[key] == pytest.approx(value, abs=1e-4)
        elif key in ("words", "segments", "change_points"):
            assert len(batched[key]) == len(value), key
            for got, want in zip(batched[key], value):
                assert got == pytest.approx(want, abs=1e-4), key
        else:
            assert batched[key] == value, key


# -- the four task types -----------------------------------------------------------------

def test_speech_to_text_gives_text_words_and_a_probability(tiny_service):
    result = run_one(tiny_service, "speech-to-text", CLIP)
    assert result["analysis_type"] == "transcription"
    assert result["num_frames"] == frame_count(16_000, 400, 320) == 49
    assert result["frame_stride_s"] == 0.02 and result["duration_s"] == 1.0
    assert isinstance(result["text"], str) and result["text"]  # random weights: noise, not empty
    assert " ".join(w["word"] for w in result["words"]) == result["text"]
    assert 0.0 < result["confidence"] <= 1.0
    starts = [w["start_s"] for w in result["words"]]
    assert starts == sorted(starts)
    for word in result["words"]:
        assert 0.0 <= word["start_s"] < word["end_s"] <= 1.0 and 0 < word["confidence"] <= 1
    assert all(isinstance(t, int) and 0 < t < 32 for t in result["token_ids"])


def test_feature_extraction_pools_the_last_hidden_state(tiny_service):
    result = run_one(tiny_service, "audio-feature-extraction",
                     {"audio": CLIP, "layers": "all", "frame_features": True})
    frames = result["frames"]
    assert frames.shape == (49, 64) and frames.dtype == np.float32
    assert result["embedding"].shape == (64,) and result["embedding"].dtype == np.float32
    np.testing.assert_allclose(result["embedding"], frames.mean(axis=0), atol=1e-6)
    assert sorted(result["layer_embeddings"]) == [0, 1, 2]
    assert not np.allclose(result["layer_embeddings"][0], result["embedding"], atol=1e-3)
    # layer 2 is the last layer's output; this stable-layer-norm model normalises it once more
    final_norm = tiny_service._loaded.model.wav2vec2.encoder.layer_norm
    with torch.inference_mode():
        normalised = final_norm(torch.from_numpy(result["layer_frames"][2])).numpy()
    np.testing.assert_allclose(normalised, frames, atol=1e-5)


def test_without_a_final_norm_the_top_layer_is_the_embedded_state(group_norm_checkpoint):
    service = start_service(group_norm_checkpoint)
    result = run_one(service, "audio-feature-extraction",
                     {"audio": CLIP, "layers": [-1], "frame_features": True})
    np.testing.assert_allclose(result["layer_frames"][2], result["frames"], atol=1e-6)
    np.testing.assert_allclose(result["layer_embeddings"][2], result["embedding"], atol=1e-6)
    service.shutdown()


def test_features_without_options_are_just_the_embedding(tiny_service):
    result = run_one(tiny_service, "audio_process", {"audio": CLIP, "analysis_type": "features"})
    assert set(result) == {"analysis_type", "duration_s", "num_frames", "frame_stride_s",
                           "embedding", "hidden_size"}


def test_audio_analyze_finds_the_tone_between_silences(tiny_service):
    result = run_one(tiny_service, "audio_analyze", {"audio": tone(2.0, start=0.5, stop=1.3)})
    assert result["analysis_type"] == "patterns"
    assert [s["label"] for s in result["segments"]] == ["silence", "speech", "silence"]
    assert result["segments"][1]["start_s"] == pytest.approx(0.5, abs=0.03)
    assert result["speech_ratio"] == pytest.approx(0.4, abs=0.03)
    assert result["change_points"]  # the tone's edges at least
    for point in result["change_points"]:
        assert 0 < point["time_s"] < 2.0 and point["score"] >= 2.0


def test_audio_process_defaults_to_transcription(tiny_service):
    assert run_one(tiny_service, "audio_process", CLIP)["analysis_type"] == "transcription"


def test_results_survive_pickling(tiny_service):
    for task_type in sorted(Wav2Vec2Service.task_types):
        result = run_one(tiny_service, task_type, {"audio": CLIP})
        restored = pickle.loads(pickle.dumps(result))
        assert_same_result(restored, result)


# -- inputs ----------------------------------------------------------------------------------

def test_wav_bytes_stereo_downmix_and_context_rate_all_reach_the_model(tiny_service):
    stereo = np.stack([CLIP, CLIP], axis=1)
    from_wav = run_one(tiny_service, "speech-to-text", {"audio": pcm16_wav(stereo), "downmix": True})
    assert from_wav["num_frames"] == 49
    at_8k = tone(1.0, rate=8000)
    assert run_one(tiny_service, "speech-to-text", at_8k, context={"sample_rate": 8000})[
        "duration_s"] == 1.0


@pytest.mark.parametrize("fmt, subtype", [("FLAC", "PCM_16"), ("OGG", "VORBIS"),
                                          ("MP3", "MPEG_LAYER_III")])
def test_compressed_stereo_files_at_44k1_reach_the_model_as_16k_mono(tiny_service, fmt, subtype):
    if fmt not in soundfile.available_formats():
        pytest.skip(f"this libsndfile ({soundfile.__libsndfile_version__}) cannot write {fmt}")
    stereo = np.stack([tone(1.0, rate=44_100)] * 2, axis=1)
    data = {"audio": audio_file(stereo, 44_100, fmt, subtype), "downmix": True}
    result = run_one(tiny_service, "speech-to-text", data)
    assert (result["num_frames"], result["duration_s"]) == (49, 1.0)
    with pytest.raises(InvalidInput, match=f"2 channels .a 2-channel {fmt} file"):
        run_one(tiny_service, "speech-to-text", {**data, "downmix": False})


@pytest.mark.parametrize("seconds", [1.0, 2.37])
def test_44k1_and_8k_audio_give_the_frame_count_of_16k(tiny_service, seconds):
    counts = {rate: run_one(tiny_service, "audio-feature-extraction",
                            {"audio": tone(seconds, rate=rate), "sample_rate": rate})["num_frames"]
              for rate in (16_000, 44_100, 8000)}
    assert len(set(counts.values())) == 1, counts


BAD_INPUTS = [
    (np.zeros(0, np.float32), "empty"),
    (np.where(np.arange(16_000) == 7, np.nan, CLIP).astype(np.float32), "NaN or infinite"),
    (np.full(16_000, np.inf, np.float32), "NaN or infinite"),
    (np.stack([CLIP, CLIP]), "2 channels"),
    (np.stack([CLIP, CLIP], axis=1), "2 channels"),
    (np.zeros(16_000 * 31, np.float32), "at most 30 s"),
    (np.zeros(16_000, np.int32), "float32, float64 or int16"),
    (np.zeros(16_000, np.complex64), "complex"),
    (np.array(["x"] * 1000, dtype=object), "objects or text"),
    ({"audio": CLIP, "sample_rate": 0}, "sample_rate"),
    ({"audio": CLIP, "sample_rate": -8000}, "sample_rate"),
    (b"RIFF....WAVEjunk", "WAV file cannot be decoded"),
    (b"\x00\x01 not a wav", "not a WAV file"),
    (np.zeros(100, np.float32), "at least 25.0 ms"),
]


def test_check_task_only_checks_the_type_so_lazy_services_can_queue(tiny_service):
    # Decoding happens once, in the worker, as part of the batch (see below).
    tiny_service.check_task(Task("t", "speech-to-text", b"not a wav"))
    with pytest.raises(InvalidTaskType):
        tiny_service.check_task(Task("t", "echo", CLIP))


def test_bad_tasks_fail_alone_inside_a_batch(tiny_service):
    tasks = [Task(f"bad{i}", "audio_process", data) for i, (data, _) in enumerate(BAD_INPUTS)]
    tasks.insert(3, Task("good", "audio_process", CLIP))
    outcomes = tiny_service.execute_batch(tasks)
    assert len(outcomes) == len(tasks)
    good = outcomes.pop(3)
    assert good["analysis_type"] == "transcription"
    for outcome, (_, phrase) in zip(outcomes, BAD_INPUTS):
        assert isinstance(outcome, InvalidInput) and phrase in outcome.message


def test_a_failed_forward_pass_fails_its_tasks_and_only_them(tiny_service, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CPU out of memory")

    monkeypatch.setattr(model_module, "run_batch", out_of_memory)  # imported where it runs
    outcomes = tiny_service.execute_batch([Task("a", "speech-to-text", CLIP),
                                           Task("b", "speech-to-text", np.zeros(0, np.float32)),
                                           Task("c", "audio_analyze", CLIP)])
    assert [type(o) for o in outcomes] == [ExecutionError, InvalidInput, ExecutionError]
    assert "forward pass of 2 clip(s) failed: RuntimeError: CPU out of memory" in outcomes[0].message


def test_execute_runs_one_task_and_raises_its_error(tiny_service):
    assert tiny_service.execute(Task("t", "speech-to-text", CLIP))["num_frames"] == 49
    with pytest.raises(InvalidInput, match="empty"):
        tiny_service.execute(Task("t", "speech-to-text", np.zeros(0, np.float32)))


def test_check_task_refuses_other_task_types(tiny_service):
    with pytest.raises(InvalidTaskType):
        tiny_service.check_task(Task("t", "text-generation", CLIP))
    tiny_service.check_task(Task("t", "speech-to-text", CLIP))  # a good one passes


# -- batching ---------------------------------------------------------------------------------

def mixed_tasks() -> list[Task]:
    clips = [tone(s, start=0.1, freq=f, seed=i) for i, (s, f) in
             enumerate([(1.0, 220), (0.37, 330), (2.5, 440), (0.03, 550), (1.0, 660)])]
    kinds = [("speech-to-text", {}), ("audio-feature-extraction", {"layers": [0, -1],
                                                                   "frame_features": True}),
             ("audio_analyze", {}), ("speech-to-text", {}),
             ("audio_process", {"analysis_type": "features"})]
    return [Task(f"t{i}", kind, {"audio": clip, **options})
            for i, (clip, (kind, options)) in enumerate(zip(clips, kinds))]


@pytest.mark.parametrize("checkpoint_fixture", ["tiny_checkpoint", "group_norm_checkpoint"])
def test_a_batch_gives_each_task_what_it_would_get_alone(request, checkpoint_fixture):
    service = start_service(request.getfixturevalue(checkpoint_fixture))
    tasks = mixed_tasks()
    batched = service.execute_batch(tasks)
    alone = [service.execute_batch([task])[0] for task in tasks]
    assert len(batched) == len(tasks)
    for b, a in zip(batched, alone):
        assert not isinstance(b, Exception), b
        assert_same_result(b, a)
    service.shutdown()


def test_layer_norm_models_share_one_padded_pass_group_norm_ones_split_by_length(
        request, monkeypatch):
    passes: list[list[int]] = []
    real_forward = model_module._forward

    def counting_forward(loaded, waveforms, all_layers):
        passes.append([w.shape[0] for w in waveforms])
        return real_forward(loaded, waveforms, all_layers)

    monkeypatch.setattr(model_module, "_forward", counting_forward)
    tasks = mixed_tasks()  # lengths 1.0, 0.37, 2.5, 0.03, 1.0 s
    for fixture, expected in (("tiny_checkpoint", [[16_000, 5920, 40_000, 480, 16_000]]),
                              ("group_norm_checkpoint", [[16_000, 16_000], [5920], [40_000],
                                                         [480]])):
        service = start_service(request.getfixturevalue(fixture))
        passes.clear()
        service.execute_batch(tasks)
        assert sorted(passes) == sorted(expected), fixture
        service.shutdown()


def test_encoder_plus_head_equals_the_ctc_models_own_forward(tiny_service):
    loaded = tiny_service._loaded
    ours = run_batch(loaded, [CLIP])[0]
    inputs = loaded.feature_extractor(CLIP, sampling_rate=16_000, return_tensors="pt")
    with torch.inference_mode():
        reference = loaded.model(**inputs, output_hidden_states=True)
    np.testing.assert_allclose(ours.logits, reference.logits[0].numpy(), atol=1e-5)
    layers = run_batch(loaded, [CLIP], all_layers=True)[0].layers
    assert len(layers) == len(reference.hidden_states) == 3
    for ours_layer, reference_layer in zip(layers, reference.hidden_states):
        np.testing.assert_allclose(ours_layer, reference_layer[0].numpy(), atol=1e-5)


def test_frame_count_matches_the_models_own_length_rule(tiny_service):
    lengths = torch.tensor([400, 401, 719, 720, 16_000, 23_457, 480_000])
    expected = tiny_service._loaded.model._get_feat_extract_output_lengths(lengths).tolist()
    assert [frame_count(int(n), 400, 320) for n in lengths] == expected
    assert frame_count(399, 400, 320) == 0


# -- lifecycle, memory and status ------------------------------------------------------------

def test_describe_says_plainly_that_weights_are_random(tiny_service):
    facts = tiny_service.describe()
    assert facts["random_weights"] is True and facts["note"] == "random weights: text is noise"
    assert facts["device"] == "cpu" and facts["layers"] == 2 and facts["sample_rate"] == 16_000
    assert facts["batching"] == "padded with attention mask"
    assert facts["torch_threads"] == 1 and facts["parameters"] > 0 and facts["load_s"] >= 0


def test_loading_prints_no_progress_bars(tiny_checkpoint, capfd):
    transformers.utils.logging.enable_progress_bar()
    transformers.utils.logging.set_verbosity_warning()
    Wav2Vec2ForCTC.from_pretrained(tiny_checkpoint, local_files_only=True)
    assert capfd.readouterr().err  # without quieting, transformers draws a bar
    service = start_service(tiny_checkpoint)
    service.execute_batch([Task("t", "speech-to-text", CLIP)])
    assert capfd.readouterr() == ("", "")
    service.shutdown()


def test_max_memory_below_the_model_size_refuses_to_load(tiny_checkpoint):
    with pytest.raises(InitError, match="max_memory is 1.0 MB but loading would bring"):
        start_service(tiny_checkpoint, max_memory=10**6)


def test_rss_over_max_memory_after_loading_refuses_to_load(tiny_checkpoint, monkeypatch):
    readings = iter([100_000_000, 5_000_000_000])  # before loading, after loading
    monkeypatch.setattr(service_module, "process_rss_bytes", lambda: next(readings))
    with pytest.raises(InitError, match="after loading the process uses 5000.0 MB"):
        start_service(tiny_checkpoint, max_memory=10**9)


def test_rss_over_max_memory_after_a_batch_is_reported(tiny_checkpoint, monkeypatch):
    service = start_service(tiny_checkpoint, max_memory=100 * 10**9)
    assert service.describe()["memory_ok"] is True
    monkeypatch.setattr(service_module, "process_rss_bytes", lambda: 200 * 10**9)
    service.execute_batch([Task("t", "speech-to-text", CLIP)])
    facts = service.describe()
    assert facts["memory_ok"] is False and facts["rss_bytes"] == 200 * 10**9
    service.shutdown()


def test_a_missing_model_is_an_init_error(tmp_path):
    with pytest.raises(InitError, match="cannot load wav2vec2 model .* no checkpoint folder at"):
        start_service(tmp_path / "nowhere")
    with pytest.raises(InitError, match="no file named model.safetensors"):
        start_service(tmp_path)  # a folder, but no checkpoint in it


def test_cuda_without_a_gpu_is_an_init_error(tiny_checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InitError, match="torch sees no CUDA GPU"):
        start_service(tiny_checkpoint, device="cuda")


def test_before_initialize_and_after_shutdown_tasks_are_refused(tiny_checkpoint):
    service = Wav2Vec2Service("w", Wav2Vec2Settings(model=str(tiny_checkpoint),
                                                    local_files_only=True))
    service.check_task(Task("t", "speech-to-text", CLIP))  # queued until the model loads
    assert isinstance(service.execute_batch([Task("t", "speech-to-text", CLIP)])[0],
                      ServiceUnavailable)
    service.initialize()
    assert service.is_initialized()
    service.shutdown()
    service.shutdown()  # safe twice
    assert not service.is_initialized()
    outcome = service.execute_batch([Task("t", "speech-to-text", CLIP)])[0]
    assert isinstance(outcome, ServiceUnavailable)


# -- checkpoint and timing helpers -----------------------------------------------------------

def test_make_model_cli_writes_a_checkpoint_the_service_loads(tmp_path, capsys):
    assert main([str(tmp_path / "model"), "--size", "tiny", "--seed", "3"]) == 0
    assert "random-weight tiny wav2vec2 checkpoint" in capsys.readouterr().out
    marker = json.loads((tmp_path / "model" / RANDOM_WEIGHTS_MARKER).read_text())
    assert marker == {"random_weights": True, "size": "tiny", "seed": 3,
                      "note": "random weights: transcriptions are noise"}
    service = start_service(tmp_path / "model")
    assert run_one(service, "speech-to-text", CLIP)["num_frames"] == 49
    service.shutdown()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "other"), "--size", "huge"])


def test_base_size_is_the_wav2vec2_base_shape():
    config = model_config("base")
    assert (config.hidden_size, config.num_hidden_layers, config.feat_extract_norm) \
        == (768, 12, "group")
    assert config.vocab_size == 32


def test_the_same_seed_gives_the_same_weights(tmp_path):
    from services.wav2vec2.checkpoint import make_checkpoint
    first = make_checkpoint(tmp_path / "a", seed=5)
    second = make_checkpoint(tmp_path / "b", seed=5)
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()


def test_time_forward_reports_positive_times(tiny_service):
    timing = time_forward(tiny_service._loaded, seconds=0.5, batch_size=2, repeats=2)
    assert timing["batch_size"] == 2 and 0 < timing["min_ms"] <= timing["p50_ms"] <= timing["max_ms"]


def test_warm_up_is_a_silent_clip_at_each_power_of_two_batch_size(tiny_service):
    batches = tiny_service.warmup_inputs(8)
    assert [len(b) for b in batches] == [1, 2, 4, 8]
    assert [len(b) for b in tiny_service.warmup_inputs(12)][-1] == 12  # and the largest
    for batch in batches:
        assert all(not np.any(t.data) and t.type == "speech-to-text" for t in batch)
        outcomes = tiny_service.execute_batch(batch)
        assert not any(isinstance(o, Exception) for o in outcomes), outcomes
