"""Decoding (soundfile), sample checks and resampling (soxr): services/wav2vec2/audio.py."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile

from messages.errors import InvalidInput
from services.wav2vec2.audio import load_samples, resample
from services.wav2vec2.model import frame_count
from tests.unit.wav2vec2_fixtures import audio_file, pcm16_wav, riff_wav, tone

LIMITS = dict(max_seconds=30.0, min_seconds=0.025)
RATES = [8000, 22_050, 44_100, 48_000]
# (format, subtype, largest error of a lossless round trip; None: lossy)
FORMATS = [
    ("WAV", "PCM_U8", 1 / 128), ("WAV", "PCM_16", 1 / 2 ** 15), ("WAV", "PCM_24", 1 / 2 ** 23),
    ("WAV", "PCM_32", 1 / 2 ** 31), ("WAV", "FLOAT", 1e-7), ("FLAC", "PCM_16", 1 / 2 ** 15),
    ("FLAC", "PCM_24", 1 / 2 ** 23), ("OGG", "VORBIS", None), ("MP3", "MPEG_LAYER_III", None),
]
FORMAT_IDS = [f"{fmt}-{subtype}" for fmt, subtype, _ in FORMATS]
HAS_MP3 = "MP3" in soundfile.available_formats()
NO_MP3 = (f"libsndfile {soundfile.__libsndfile_version__} in this soundfile cannot write MP3 "
          "(that needs libsndfile >= 1.1 built with LAME and mpg123)")


def load(audio, rate=16_000, downmix=False, **limits):
    return load_samples(audio, rate, downmix=downmix, **{**LIMITS, **limits})


def sine(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.shape[0])))
    return float(np.argmax(spectrum) * rate / samples.shape[0])


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples ** 2)))


def encoded(fmt: str, subtype: str, samples: np.ndarray, rate: int) -> bytes:
    if fmt == "MP3" and not HAS_MP3:
        pytest.skip(NO_MP3)
    return audio_file(samples, rate, fmt, subtype)


# -- decoding: every format, rate and channel layout ------------------------------------

@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("fmt, subtype, tolerance", FORMATS, ids=FORMAT_IDS)
def test_every_format_decodes_to_mono_at_its_rate_and_keeps_its_pitch(fmt, subtype, tolerance,
                                                                      rate, channels):
    left, right = sine(1.0, rate, amplitude=0.6), sine(1.0, rate, amplitude=0.2)
    written = left if channels == 1 else np.stack([left, right], axis=1)
    expected = left if channels == 1 else (left + right) / 2  # downmix averages the channels
    audio = load(encoded(fmt, subtype, written, rate), downmix=channels == 2)
    assert (audio.rate, audio.container) == (rate, fmt)
    assert audio.samples.dtype == np.float64 and audio.samples.shape == expected.shape
    if tolerance is not None:
        np.testing.assert_allclose(audio.samples, expected, atol=tolerance * 1.01)
    else:  # lossy: the same loudness, give or take the codec
        assert rms(audio.samples) == pytest.approx(rms(expected), rel=0.05)
    at_16k = resample(audio.samples, rate, 16_000)
    assert peak_hz(at_16k, 16_000) == pytest.approx(440, abs=1.5)


@pytest.mark.parametrize("fmt, subtype, _", FORMATS, ids=FORMAT_IDS)
def test_a_stereo_file_is_refused_unless_downmixed(fmt, subtype, _):
    stereo = np.stack([sine(0.5, 22_050), sine(0.5, 22_050)], axis=1)
    with pytest.raises(InvalidInput, match=rf"2 channels \(a 2-channel {fmt} file\); the model "
                                           r"takes mono audio: .* \"downmix\": true"):
        load(encoded(fmt, subtype, stereo, 22_050))


def test_pcm16_from_the_stdlib_writer_decodes_to_the_same_samples():
    signal = tone(0.5)
    audio = load(pcm16_wav(signal, 22_050))
    assert audio.rate == 22_050 and audio.samples.shape == signal.shape
    np.testing.assert_allclose(audio.samples, signal, atol=1 / 32767)


@pytest.mark.parametrize("extensible", [False, True])
def test_float32_wav_is_read_as_stored(extensible):
    signal = tone(0.3)
    audio = load(riff_wav(signal.astype("<f4").tobytes(), 3, 1, 8000, 32, extensible=extensible))
    assert audio.rate == 8000
    np.testing.assert_array_equal(audio.samples, signal.astype(np.float64))


def test_a_data_chunk_longer_than_the_file_is_read_to_the_last_whole_frame():
    good = pcm16_wav(np.zeros((1001, 2)))
    truncated = good[:-3]  # the header still claims 1001 frames
    assert load(truncated, downmix=True).samples.shape == (1000,)


def test_a_file_longer_than_the_limit_is_refused_before_a_sample_is_decoded(monkeypatch):
    long_flac = audio_file(np.zeros(8000 * 31), 8000, "FLAC")  # silence: a few kB

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a file that its header already disqualified")

    monkeypatch.setattr(soundfile.SoundFile, "read", no_decoding)
    with pytest.raises(InvalidInput, match=r"31.00 s long; .* at most 30 s .max_audio_seconds."):
        load(long_flac)


def test_nan_in_a_float_wav_is_refused_with_its_position():
    signal = sine(0.5, 16_000)
    signal[321] = np.nan
    with pytest.raises(InvalidInput, match="1 NaN or infinite samples .the first at index 321"):
        load(audio_file(signal, 16_000, "WAV", "FLOAT"))


def flac_cut_in_half() -> bytes:
    data = audio_file(tone(1.0, rate=44_100), 44_100, "FLAC")
    return data[:len(data) // 2]


def ogg_cut_short() -> bytes:
    data = audio_file(tone(1.0, rate=44_100), 44_100, "OGG", "VORBIS")
    return data[:len(data) // 10]


def wav_with_channels(channels: int) -> bytes:
    return audio_file(np.zeros((800, channels)), 16_000, "WAV", "PCM_16")


@pytest.mark.parametrize("data, phrase", [
    (b"", "audio is empty"),
    (pcm16_wav(np.zeros(0)), "audio is empty"),
    (b"not audio at all", "audio bytes are not a WAV file, nor FLAC, OGG/Vorbis or MP3 "
                          r"\(libsndfile: Format not recognised\); send WAV"),
    (b"\x00\x00\x00\x20ftypM4A " + bytes(200), r"audio bytes are MP4/M4A \(AAC or ALAC\), which "
                                               "libsndfile does not read; convert them"),
    (b"\x1aE\xdf\xa3" + bytes(200), "audio bytes are WebM/Matroska, which libsndfile does not"),
    (b"RIFF\x00\x00\x00\x00WAVE", r"WAV file cannot be decoded \(libsndfile: .*\): it is "
                                  "truncated, corrupt, or in an encoding"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + struct.pack("<HHIIHH", 1, 1, 16000,
                                                                     32000, 2, 16),
     "WAV file cannot be decoded .libsndfile: .*data"),
    (riff_wav(bytes(8), 2, 1, 16_000, 16), "WAV file cannot be decoded"),  # ADPCM, no coefficients
    (riff_wav(bytes(8), 3, 1, 16_000, 16), "WAV file cannot be decoded"),  # 16-bit float
    (riff_wav(bytes(8), 1, 0, 16_000, 16), "WAV file cannot be decoded"),  # no channels
    (b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(300), "MP3 file cannot be decoded"),
    (ogg_cut_short(), "OGG file cannot be decoded"),
    (flac_cut_in_half(), r"FLAC file is truncated or corrupt: decoding failed after \d+.\d\d s "
                         r"of the 1.00 s its header announces \(libsndfile: .*\); send the whole"),
    (pcm16_wav(np.zeros(100), 100), "the WAV header's sample rate must be a whole number of Hz "
                                    "from 1000 to 384000, got 100"),
    (wav_with_channels(17), "WAV file has 17 channels; at most 16 are taken"),
], ids=["no-bytes", "no-frames", "unknown", "m4a", "webm", "no-fmt", "no-data", "adpcm",
        "float16", "zero-channels", "mp3-no-frames", "ogg-cut", "flac-cut", "rate-100",
        "17-channels"])
def test_bytes_that_cannot_be_used_are_refused_with_the_reason(data, phrase):
    with pytest.raises(InvalidInput, match=phrase):
        load(data, downmix=True)


def test_a_16_channel_file_is_taken_with_downmix():
    assert load(wav_with_channels(16), downmix=True).samples.shape == (800,)


# -- sample checks on arrays -----------------------------------------------------------

def test_arrays_keep_the_rate_they_were_sent_with():
    audio = load(tone(0.5), rate=44_100)
    assert (audio.rate, audio.container, audio.samples.shape) == (44_100, None, (8000,))


def test_int16_is_scaled_by_32768():
    audio = load(np.array([-32768, 0, 16384] * 200, dtype=np.int16))
    assert audio.samples[:3].tolist() == [-1.0, 0.0, 0.5]


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
    with pytest.raises(InvalidInput, match=r"numpy array of samples or audio file bytes \(WAV.*\), "
                                           "got list"):
        load([0.0] * 1000)


@pytest.mark.parametrize("audio", [np.zeros(0, np.float32), np.zeros((0, 2), np.float32)])
def test_empty_arrays_are_refused(audio):
    with pytest.raises(InvalidInput, match="empty"):
        load(audio)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_infinite_samples_are_refused_with_their_position(bad):
    audio = tone(0.5)
    audio[1234] = bad
    with pytest.raises(InvalidInput, match="1 NaN or infinite samples .the first at index 1234"):
        load(audio)


@pytest.mark.parametrize("shape", [(8000, 2), (2, 8000)])
def test_two_channels_are_refused_unless_downmixed(shape):
    with pytest.raises(InvalidInput, match=r"2 channels \(array shape .*downmix"):
        load(np.zeros(shape, np.float32))


def test_downmix_averages_the_channels_whichever_axis_holds_them():
    left, right = tone(0.5, freq=200), tone(0.5, freq=300, seed=1)
    expected = (left.astype(np.float64) + right) / 2
    for stereo in (np.stack([left, right]), np.stack([left, right], axis=1)):
        np.testing.assert_allclose(load(stereo, downmix=True).samples, expected, rtol=1e-6)


def test_a_single_channel_column_is_mono():
    assert load(tone(0.5)[:, None]).samples.shape == (8000,)


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


# -- resampling -----------------------------------------------------------------------------

def reference_signal(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 3000 * t)


@pytest.mark.parametrize("rate", [8000, 11_025, 22_050, 44_100, 48_000])
def test_resampled_tones_match_the_same_tones_made_at_16k(rate):
    out = resample(reference_signal(1.36, rate), rate, 16_000)
    expected = reference_signal(1.36, 16_000)
    assert out.shape == expected.shape
    edge = 400  # the filter sees zeros beyond the ends
    np.testing.assert_allclose(out[edge:-edge], expected[edge:-edge], atol=2e-4)


@pytest.mark.parametrize("rate, freq", [
    (rate, freq) for rate in (8000, 11_025, 22_050, 44_100, 48_000)
    for freq in (100.0, 440.0, 3000.0, 7000.0) if freq < 0.45 * min(rate, 16_000)])
def test_a_resampled_sine_keeps_its_frequency_and_level(rate, freq):
    out = resample(sine(1.0, rate, freq), rate, 16_000)
    assert peak_hz(out, 16_000) == pytest.approx(freq, abs=1.0)
    assert rms(out[400:-400]) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_content_above_the_new_nyquist_is_filtered_out_not_folded_back():
    t = np.arange(44_100) / 44_100
    out = resample(np.sin(2 * np.pi * 10_000 * t), 44_100, 16_000)  # would alias to 6 kHz
    assert rms(out[400:-400]) < 1e-3
    # dropping samples instead would keep the tone's full power (RMS 0.707)


def test_same_rate_is_a_copy_and_strided_input_is_taken():
    audio = reference_signal(0.1, 16_000)
    out = resample(audio, 16_000, 16_000)
    np.testing.assert_array_equal(out, audio)
    assert out is not audio
    strided = reference_signal(1.0, 88_200)[::2]  # a view: 44.1 kHz, not contiguous
    np.testing.assert_allclose(resample(strided, 44_100, 16_000)[400:-400],
                               reference_signal(1.0, 16_000)[400:-400], atol=2e-4)


@pytest.mark.parametrize("seconds", [0.99, 2.37, 5.0])
def test_44k1_and_8k_versions_give_the_same_frame_count_as_16k(seconds):
    window, hop = 400, 320  # the wav2vec2 conv stack
    frames_16k = frame_count(round(seconds * 16_000), window, hop)
    for rate in (44_100, 8000):
        resampled = resample(reference_signal(seconds, rate), rate, 16_000)
        assert frame_count(resampled.shape[0], window, hop) == frames_16k
