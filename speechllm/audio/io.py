"""Decode audio files (wav/flac/ogg/mp3 through soundfile), downmix, resample with soxr.

Any sample rate and channel count is accepted; the result is always mono float32 at
:data:`SAMPLE_RATE` (16 kHz, what Whisper expects). Segments (``offset``/``duration``) are read by
seeking, without decoding the whole file. Each failure is a typed :class:`AudioError` subclass
whose message names the file, so batch jobs can count and skip by kind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechllm.errors import SpeechLLMError

SAMPLE_RATE = 16_000
MIN_SECONDS = 0.1


class AudioError(SpeechLLMError):
    """Audio that cannot be used. ``kind`` is a short stable name for counting."""

    kind = "audio_error"

    def __init__(self, path: str | os.PathLike, detail: str):
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{path}: {detail}")


class MissingAudioError(AudioError):
    kind = "missing"


class UnreadableAudioError(AudioError):
    kind = "unreadable"


class EmptyAudioError(AudioError):
    kind = "empty"


class NonFiniteAudioError(AudioError):
    kind = "nan_or_inf"


class AllZeroAudioError(AudioError):
    kind = "all_zero"


class AudioTooShortError(AudioError):
    kind = "too_short"


class AudioTooLongError(AudioError):
    kind = "too_long"


#: Every error kind, in the order a report lists them.
AUDIO_ERROR_KINDS: tuple[str, ...] = (
    MissingAudioError.kind,
    UnreadableAudioError.kind,
    EmptyAudioError.kind,
    NonFiniteAudioError.kind,
    AllZeroAudioError.kind,
    AudioTooShortError.kind,
    AudioTooLongError.kind,
)


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (no decoding)."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _open(path: str | os.PathLike):
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise MissingAudioError(path, "no such file")
    if p.is_dir():
        raise UnreadableAudioError(path, "is a folder, not an audio file")
    if p.stat().st_size == 0:
        raise EmptyAudioError(path, "file is empty (0 bytes)")
    try:
        return sf.SoundFile(str(p))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise UnreadableAudioError(path, f"cannot decode ({e})") from None


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, channels and frame count from the file header."""
    with _open(path) as f:
        return AudioInfo(sample_rate=f.samplerate, channels=f.channels, frames=f.frames)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float32 signal with soxr (high quality); identity when rates match."""
    if orig_sr == target_sr:
        return wave.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(wave.astype(np.float32, copy=False), orig_sr, target_sr, quality="HQ").astype(
        np.float32, copy=False
    )


def load_audio(
    path: str | os.PathLike,
    *,
    offset: float = 0.0,
    duration: float | None = None,
    sample_rate: int = SAMPLE_RATE,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float | None = None,
    check: bool = True,
) -> np.ndarray:
    """Decode ``path`` (or the segment ``[offset, offset + duration)`` seconds) to mono float32.

    Only the segment is decoded (the file is seeked, not read whole). Channels are averaged and
    the result is resampled to ``sample_rate``. Raises a typed :class:`AudioError` for a missing,
    unreadable or empty file, a segment starting past the end, and (with ``check``) NaN/Inf
    samples, all-zero audio, audio shorter than ``min_seconds`` or longer than ``max_seconds``.
    A segment that runs past the end of the file is cut at the end, as a reader of a long
    recording with rounded times would expect.
    """
    if duration is not None and duration <= 0:
        raise EmptyAudioError(path, f"segment duration {duration}s is not positive")
    with _open(path) as f:
        sr = f.samplerate
        start = int(round(offset * sr))
        if offset < 0 or start >= f.frames and f.frames > 0:
            raise EmptyAudioError(path, f"offset {offset:.3f}s is outside the file ({f.frames / sr:.3f}s)")
        if check and max_seconds is not None:
            # Cheap header check first, so an hour-long file is refused before it is decoded.
            available = (f.frames - start) / sr
            wanted = available if duration is None else min(duration, available)
            if wanted > max_seconds:
                raise AudioTooLongError(path, f"{wanted:.2f}s is longer than the {max_seconds}s limit")
        frames = -1 if duration is None else int(round(duration * sr))
        try:
            if start:
                f.seek(start)
            data = f.read(frames=frames, dtype="float32", always_2d=True)
        except Exception as e:
            raise UnreadableAudioError(path, f"cannot decode ({e})") from None
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if wave.size == 0:
        raise EmptyAudioError(path, "no samples")
    if check:
        if not np.isfinite(wave).all():
            raise NonFiniteAudioError(path, "contains NaN or Inf samples")
        if not np.any(wave):
            raise AllZeroAudioError(path, "all samples are zero")
        if wave.size / sr < min_seconds:
            raise AudioTooShortError(path, f"{wave.size / sr:.3f}s is shorter than {min_seconds}s")
    return resample(np.ascontiguousarray(wave), sr, sample_rate)
