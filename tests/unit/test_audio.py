"""WAV decoding, sample checks and resampling (services/wav2vec2/audio.py): numpy only."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from messages.errors import InvalidInput
from services.wav2vec2.audio import decode_wav, load_samples, resample
from services.wav2vec2.model import frame_count
from tests.unit.wav2vec2_fixtures import pcm16_wav, riff_wav, tone

LIMITS = dict(max_seconds=30.0, min_seconds=0.025)


def load(audio, rate=16_000, downmix=False, **limits):
    return load_samples(audio, rate, downmix=downmix, **{**LIMITS, **limits})


# -- WAV decoding ------------------------------------------------------------------

def test_pcm16_from_the_stdlib_writer_decodes_to_the_same_samples():
    signal = tone(0.5)
    samples, rate = decode_wav(pcm16_wav(signal, 22_050))
    assert rate == 22_050 and samples.shape == (signal.shape[0], 1)
    np.testing.assert_allclose(samples[:, 0], signal, atol=1 / 32767)


def test_stereo_pcm16_keeps_frames_by_channels():
    stereo = np.stack([tone(0.2), -tone(0.2)], axis=1)
    samples, _ = decode_wav(pcm16_wav(stereo))
    assert samples.shape == stereo.shape
    np.testing.assert_allclose(samples, stereo, atol=1 / 32767)


@pytest.mark.parametrize("extensible", [False, True])
def test_float32_wav_is_read_as_stored(extensible):
    signal = tone(0.3)
    samples, rate = decode_wav(riff_wav(signal.astype("<f4").tobytes(), 3, 1, 8000, 32,
                                        extensible=extensible))
    assert rate == 8000
    np.testing.assert_array_equal(samples[:, 0], signal.astype(np.float64))


def test_integer_pcm_widths_scale_to_the_same_value():
    # -0.5 full scale written at 8 (unsigned), 16, 24 and 32 bits
    encodings = {
        8: np.array([64], dtype=np.uint8).tobytes(),
        16: np.array([-16384], dtype="<i2").tobytes(),
        24: (-(1 << 22) & 0xFFFFFF).to_bytes(3, "little"),
        32: np.array([-(1 << 30)], dtype="<i4").tobytes(),
    }
    for bits, payload in encodings.items():
        samples, _ = decode_wav(riff_wav(payload, 1, 1, 16_000, bits))
        assert samples[0, 0] == pytest.approx(-0.5), bits


def test_a_data_chunk_longer_than_the_file_is_read_to_the_last_whole_frame():
    good = pcm16_wav(np.zeros((101, 2)))
    truncated = good[:-3]  # the header still claims 101 frames
    samples, _ = decode_wav(truncated)
    assert samples.shape == (100, 2)


@pytest.mark.parametrize("data, phrase", [
    (b"not audio at all", "not a WAV file"),
    (b"RIFF\x00\x00\x00\x00WAVE", "no 'fmt' chunk"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + struct.pack("<HHIIHH", 1, 1, 16000,
                                                                     32000, 2, 16), "no 'data'"),
    (riff_wav(bytes(8), 2, 1, 16_000, 16), "format tag 0x0002 with 16 bits"),  # ADPCM
    (riff_wav(bytes(8), 3, 1, 16_000, 16), "float with 16 bits per sample; send"),
    (riff_wav(bytes(8), 1, 0, 16_000, 16), "inconsistent"),
])
def test_undecodable_wav_bytes_are_refused_with_the_reason(data, phrase):
    with pytest.raises(InvalidInput, match=phrase):
        decode_wav(data)


# -- sample checks -------------------------------------------------------------------

def test_wav_bytes_and_arrays_give_mono_float_samples_and_their_rate():
    samples, rate = load(pcm16_wav(tone(0.5), 8000), rate=16_000)
    assert rate == 8000 and samples.ndim == 1 and samples.dtype == np.float64
    samples, rate = load(tone(0.5), rate=44_100)
    assert rate == 44_100 and samples.shape == (8000,)


def test_int16_is_scaled_by_32768():
    samples, _ = load(np.array([-32768, 0, 16384] * 200, dtype=np.int16))
    assert samples[:3].tolist() == [-1.0, 0.0, 0.5]


@pytest.mark.parametrize("dtype, phrase", [
    (np.int32, "got int32"), (np.complex64, "complex"), (object, "objects or text"),
    (np.float16, "got float16"), (np.uint8, "got uint8"),
])
def test_other_dtypes_are_refused(dtype, phrase):
    with pytest.raises(InvalidInput, match=phrase):
        load(np.zeros(1000, dtype=dtype))


def test_text_arrays_and_python_lists_are_refused():
    with pytest.raises(InvalidInput, match="objects or text"):
        load(np.array(["a"] * 1000))
    with pytest.raises(InvalidInput, match="numpy array of samples or WAV bytes, got list"):
        load([0.0] * 1000)


@pytest.mark.parametrize("audio", [np.zeros(0, np.float32), np.zeros((0, 2), np.float32), b""])
def test_empty_audio_is_refused(audio):
    phrase = "empty" if isinstance(audio, np.ndarray) else "not a WAV file"
    with pytest.raises(InvalidInput, match=phrase):
        load(audio)


def test_empty_wav_file_is_refused():
    with pytest.raises(InvalidInput, match="empty"):
        load(pcm16_wav(np.zeros(0)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_infinite_samples_are_refused_with_their_position(bad):
    audio = tone(0.5)
    audio[1234] = bad
    with pytest.raises(InvalidInput, match="1 NaN or infinite samples .the first at index 1234"):
        load(audio)


@pytest.mark.parametrize("shape", [(8000, 2), (2, 8000)])
def test_two_channels_are_refused_unless_downmixed(shape):
    with pytest.raises(InvalidInput, match=r"2 channels .*downmix"):
        load(np.zeros(shape, np.float32))


def test_downmix_averages_the_channels_whichever_axis_holds_them():
    left, right = tone(0.5, freq=200), tone(0.5, freq=300, seed=1)
    expected = (left.astype(np.float64) + right) / 2
    for stereo in (np.stack([left, right]), np.stack([left, right], axis=1)):
        samples, _ = load(stereo, downmix=True)
        np.testing.assert_allclose(samples, expected, rtol=1e-6)


def test_a_single_channel_column_is_mono():
    samples, _ = load(tone(0.5)[:, None])
    assert samples.shape == (8000,)


def test_arrays_of_three_dimensions_or_no_clear_channel_axis_are_refused():
    with pytest.raises(InvalidInput, match="1-D .mono. or 2-D"):
        load(np.zeros((2, 2, 4000), np.float32))
    with pytest.raises(InvalidInput, match="cannot tell channels from samples"):
        load(np.zeros((100, 100), np.float32))


def test_audio_longer_than_the_limit_is_refused_before_it_is_scanned():
    audio = np.full(16_000 * 3, np.nan, np.float32)  # the NaNs are never reached
    with pytest.raises(InvalidInput, match=r"3.00 s long; .* at most 2 s .max_audio_seconds."):
        load(audio, max_seconds=2.0)


def test_audio_too_short_for_one_frame_is_refused():
    with pytest.raises(InvalidInput, match="10.0 ms long; the model needs at least 25.0 ms"):
        load(np.zeros(160, np.float32))


# -- resampling -------------------------------------------------------------------------

def reference_signal(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 3000 * t)


@pytest.mark.parametrize("rate", [8000, 11_025, 22_050, 44_100, 48_000])
def test_resampled_tones_match_the_same_tones_made_at_16k(rate):
    out = resample(reference_signal(1.36, rate), rate, 16_000)
    expected = reference_signal(1.36, 16_000)
    assert out.shape == expected.shape
    edge = 400  # the filter's half length sees zeros beyond the ends
    np.testing.assert_allclose(out[edge:-edge], expected[edge:-edge], atol=2e-4)


def test_content_above_the_new_nyquist_is_filtered_out_not_folded_back():
    t = np.arange(44_100) / 44_100
    out = resample(np.sin(2 * np.pi * 10_000 * t), 44_100, 16_000)  # would alias to 6 kHz
    assert np.sqrt(np.mean(out[400:-400] ** 2)) < 1e-3
    # dropping samples instead would keep the tone's full power (RMS 0.707)


def test_same_rate_is_a_copy():
    audio = reference_signal(0.1, 16_000)
    out = resample(audio, 16_000, 16_000)
    np.testing.assert_array_equal(out, audio)
    assert out is not audio


@pytest.mark.parametrize("seconds", [0.99, 2.37, 5.0])
def test_44k1_and_8k_versions_give_the_same_frame_count_as_16k(seconds):
    window, hop = 400, 320  # the wav2vec2 conv stack
    frames_16k = frame_count(round(seconds * 16_000), window, hop)
    for rate in (44_100, 8000):
        resampled = resample(reference_signal(seconds, rate), rate, 16_000)
        assert frame_count(resampled.shape[0], window, hop) == frames_16k
