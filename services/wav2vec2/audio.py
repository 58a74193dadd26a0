"""Audio in: decoding (libsndfile, through soundfile), sample checks, resampling (libsoxr).

Every refusal is an ``InvalidInput`` whose message says what was wrong and what to send instead.
"""
from __future__ import annotations

import io
from typing import Any, NamedTuple

import numpy as np
import soundfile
import soxr

from messages.errors import InvalidInput

ACCEPTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int16))
# More channels than this are refused: in a file, because each costs decoding work
# and memory; in a 2-D array, because we would be guessing which axis holds samples.
MAX_CHANNELS = 16
SAMPLE_RATE_RANGE = (1_000, 384_000)
FILE_FORMATS = "WAV (8/16/24/32-bit integer or float), FLAC, OGG/Vorbis or MP3"
# libsndfile decodes this many frames at a time, downmixed as they come, so that a
# multichannel file is never held whole.
BLOCK_FRAMES = 1 << 16
_UNRECOGNISED_FORMAT = 1  # libsndfile's SF_ERR_UNRECOGNISED_FORMAT
# Only to name a file libsndfile could not open: (offset, magic bytes, what it is).
_KNOWN_MAGIC = ((0, b"RIFF", "WAV"), (0, b"fLaC", "FLAC"), (0, b"OggS", "OGG"),
                (0, b"ID3", "MP3"), (0, b"\xff\xfb", "MP3"), (0, b"\xff\xf3", "MP3"))
_UNREADABLE_MAGIC = ((4, b"ftyp", "MP4/M4A (AAC or ALAC)"), (0, b"\x1aE\xdf\xa3", "WebM/Matroska"))


class Audio(NamedTuple):
    samples: np.ndarray    # mono float64
    rate: int
    container: str | None  # the file format ("WAV", "FLAC", "OGG", "MP3"...); None for arrays


# -- sample checks -----------------------------------------------------------------

def load_samples(audio: Any, sample_rate: int, *, downmix: bool, max_seconds: float,
                 min_seconds: float) -> Audio:
    """Raw audio (numpy array or audio file bytes) -> mono float64 samples and their rate.

    For file bytes the rate comes from the file's header; for arrays it is
    ``sample_rate``. The duration is checked before the samples are decoded
    or scanned, so oversized audio is refused without touching it.
    """
    if isinstance(audio, (bytes, bytearray, memoryview)):
        mono, rate, container = decode(bytes(audio), downmix=downmix, max_seconds=max_seconds)
    elif isinstance(audio, np.ndarray):
        rate, container = sample_rate, None
        channel_axis = guess_channel_axis(audio)
        if audio.size == 0:
            raise InvalidInput("audio is empty: there are no samples to process")
        mono = to_mono(as_float(audio), channel_axis, downmix)
        check_max_duration(mono.shape[0] / rate, max_seconds)
    else:
        raise InvalidInput(f"audio must be a numpy array of samples or audio file bytes "
                           f"({FILE_FORMATS}), got {type(audio).__name__}")
    duration = mono.shape[0] / rate
    if duration < min_seconds:
        raise InvalidInput(f"audio is {duration * 1000:.1f} ms long; the model needs at least "
                           f"{min_seconds * 1000:.1f} ms to produce one frame",
                           {"duration_s": duration, "min_seconds": min_seconds})
    finite = np.isfinite(mono)
    if not finite.all():
        bad = int(mono.size - np.count_nonzero(finite))
        first = int(np.argmin(finite))
        raise InvalidInput(f"audio has {bad} NaN or infinite samples (the first at index {first}); "
                           "every sample must be a finite number", {"bad_samples": bad})
    return Audio(mono, rate, container)


def check_max_duration(duration: float, max_seconds: float) -> None:
    if duration > max_seconds:
        raise InvalidInput(f"audio is {duration:.2f} s long; this service takes at most "
                           f"{max_seconds:g} s (max_audio_seconds): split it into shorter pieces",
                           {"duration_s": duration, "max_audio_seconds": max_seconds})


def check_rate(rate: Any, where: str) -> int:
    low, high = SAMPLE_RATE_RANGE
    if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) \
            or not low <= rate <= high:
        raise InvalidInput(f"{where} must be a whole number of Hz from {low} to {high}, "
                           f"got {rate!r:.40}", {"key": "sample_rate"})
    return int(rate)


def as_float(samples: np.ndarray) -> np.ndarray:
    """float32/float64 as they are, int16 scaled by 1/32768; any other dtype refused."""
    if samples.dtype not in ACCEPTED_DTYPES:
        hint = ""
        if samples.dtype.kind == "c":
            hint = " (complex samples: send the real signal)"
        elif samples.dtype.kind in "OUS":
            hint = " (the array holds objects or text, not numbers)"
        raise InvalidInput(f"audio samples must be float32, float64 or int16, "
                           f"got {samples.dtype}{hint}", {"dtype": str(samples.dtype)})
    if samples.dtype == np.int16:
        return samples.astype(np.float64) / 32768.0
    return samples.astype(np.float64, copy=False)


def guess_channel_axis(array: np.ndarray) -> int | None:
    """Which axis of an audio array holds channels: None for 1-D, else 0 or 1."""
    if array.ndim == 1:
        return None
    if array.ndim != 2:
        raise InvalidInput(f"audio array must be 1-D (mono) or 2-D (channels x samples), "
                           f"got shape {array.shape}")
    rows, cols = array.shape
    if min(rows, cols) == 1:
        return 0 if rows == 1 else 1
    if rows < cols and rows <= MAX_CHANNELS:
        return 0
    if cols < rows and cols <= MAX_CHANNELS:
        return 1
    raise InvalidInput(f"cannot tell channels from samples in an array of shape {array.shape}; "
                       "send a 1-D mono array")


def to_mono(samples: np.ndarray, channel_axis: int | None, downmix: bool) -> np.ndarray:
    if channel_axis is None:
        return samples
    channels = samples.shape[channel_axis]
    check_channels(channels, downmix, f"array shape {samples.shape}")
    if channels == 1:
        return samples.reshape(-1)
    return samples.mean(axis=channel_axis)


def check_channels(channels: int, downmix: bool, what: str) -> None:
    if channels > 1 and not downmix:
        raise InvalidInput(
            f"audio has {channels} channels ({what}); the model takes mono "
            "audio: send one channel, or set \"downmix\": true to average the channels",
            {"channels": channels})


# -- decoding ------------------------------------------------------------------------

def decode(data: bytes, *, downmix: bool, max_seconds: float) -> tuple[np.ndarray, int, str]:
    """Audio file bytes -> (mono float64 samples, sample rate, file format).

    Anything libsndfile reads: WAV (integer PCM is scaled to [-1, 1), float is
    read as stored), FLAC, OGG/Vorbis, MP3, AIFF... The header's rate, channel
    count and length are checked before a sample is decoded; a file that ends
    early (streaming writers) is read up to its last whole frame.
    """
    if not data:
        raise InvalidInput("audio is empty: there are no samples to process")
    try:
        sound = soundfile.SoundFile(io.BytesIO(data))
    except soundfile.LibsndfileError as exc:
        raise _unopenable(data, exc) from None
    with sound:
        container, rate, channels = sound.format, sound.samplerate, sound.channels
        frames = sound.frames
        check_rate(rate, f"the {container} header's sample rate")
        if frames == 0:
            raise InvalidInput("audio is empty: there are no samples to process")
        if channels > MAX_CHANNELS:
            raise InvalidInput(f"{container} file has {channels} channels; at most {MAX_CHANNELS} "
                               "are taken: send one channel", {"channels": channels})
        check_channels(channels, downmix, f"a {channels}-channel {container} file")
        check_max_duration(frames / rate, max_seconds)
        pieces: list[np.ndarray] = []
        block = np.empty((min(BLOCK_FRAMES, frames), channels))
        decoded, error = 0, "no samples could be decoded"
        try:
            while decoded < frames:  # never past the header's length, which was checked
                got = sound.read(min(BLOCK_FRAMES, frames - decoded), dtype="float64",
                                 always_2d=True, out=block)
                if got.shape[0] == 0:
                    break
                pieces.append(got.mean(axis=1) if channels > 1 else got[:, 0].copy())
                decoded += got.shape[0]
        except soundfile.LibsndfileError as exc:
            pieces, error = [], f"libsndfile: {_reason(exc.error_string)}"
    if not pieces:
        raise InvalidInput(
            f"{container} file is truncated or corrupt: decoding failed after "
            f"{decoded / rate:.2f} s of the {frames / rate:.2f} s its header announces "
            f"({error}); send the whole file",
            {"format": container})
    return np.concatenate(pieces), rate, container


def _unopenable(data: bytes, exc: soundfile.LibsndfileError) -> InvalidInput:
    reason = _reason(exc.error_string)
    unreadable = _sniff(data, _UNREADABLE_MAGIC)
    if unreadable:
        return InvalidInput(f"audio bytes are {unreadable}, which libsndfile does not read; "
                            f"convert them to {FILE_FORMATS} (e.g. ffmpeg -i INPUT out.flac), "
                            "or send a numpy array of samples", {"format": unreadable})
    known = _sniff(data, _KNOWN_MAGIC)
    if known is None and exc.code == _UNRECOGNISED_FORMAT:
        return InvalidInput(f"audio bytes are not a WAV file, nor FLAC, OGG/Vorbis or MP3 "
                            f"(libsndfile: {reason}); send {FILE_FORMATS} bytes, "
                            "or a numpy array of samples")
    return InvalidInput(f"{known or 'audio'} file cannot be decoded (libsndfile: {reason}): it is "
                        "truncated, corrupt, or in an encoding libsndfile does not read; "
                        f"send {FILE_FORMATS}", {"format": known or "unknown"})


def _sniff(data: bytes, table: tuple[tuple[int, bytes, str], ...]) -> str | None:
    return next((name for offset, magic, name in table
                 if data[offset:offset + len(magic)] == magic), None)


def _reason(error: str) -> str:
    return error.strip().rstrip(".")


# -- resampling ------------------------------------------------------------------------

def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling with libsoxr; a new array of ``ceil(len * to / from)`` samples.

    Quality "HQ" (soxr's 20-bit recipe): about 120 dB stopband rejection and a
    passband flat to ~91 % of the lower Nyquist frequency, linear phase. That is
    beyond the precision of any 16-bit recording the model sees; "VHQ" (28-bit)
    costs 2-3x the time here for no audible or model-visible difference, and
    "MQ" lets a few 1e-4 of error through on tones (measured in the tests).
    """
    if from_rate == to_rate:
        return samples.astype(np.float64, copy=True)
    return soxr.resample(np.ascontiguousarray(samples, dtype=np.float64), from_rate, to_rate,
                         quality="HQ")
