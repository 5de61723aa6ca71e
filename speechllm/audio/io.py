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


class NotMonoAudioError(AudioError):
    """Samples handed over in memory that are not one 1-D mono signal."""

    kind = "not_mono"


class AudioTooShortError(AudioError):
    kind = "too_short"


class AudioTooLongError(AudioError):
    kind = "too_long"


class TruncatedAudioError(AudioError):
    """The file holds less audio than its header promises (an interrupted copy or download), and
    the span asked for reaches into the missing part. Such a row is skipped, never kept at its
    shorter length: its transcript and labels describe audio that is not there."""

    kind = "truncated"


#: Every error kind, in the order a report lists them.
AUDIO_ERROR_KINDS: tuple[str, ...] = (
    MissingAudioError.kind,
    UnreadableAudioError.kind,
    EmptyAudioError.kind,
    NonFiniteAudioError.kind,
    AllZeroAudioError.kind,
    AudioTooShortError.kind,
    AudioTooLongError.kind,
    TruncatedAudioError.kind,
)

#: How much shorter than its header a file may decode before it counts as truncated (codec
#: padding, rounding). Compressed formats' lengths can be estimates, so they also get 1 %.
TRUNCATION_TOLERANCE_SECONDS = 0.05
_ESTIMATED_LENGTH_SLACK = 0.01
#: WAV data sizes at or above this are placeholders of streaming writers (ffmpeg writes
#: 0xFFFFFFFF, others 0x7FFFF000 or so), not promises.
_WAV_STREAMING_SIZE = 0x7FFF0000


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (no decoding).

    ``frames`` is what libsndfile can read. ``header_frames`` is set only when the header
    promises more than that (a WAV whose ``data`` chunk runs past the end of the file, which
    libsndfile silently shortens); ``None`` when they agree or the header states no length.
    """

    sample_rate: int
    channels: int
    frames: int
    header_frames: int | None = None

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def truncated(self) -> bool:
        """Whether the header promises more audio than the file holds."""
        return self.header_frames is not None and self.header_frames > self.frames


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


def _wav_header_frames(path: str | os.PathLike, frames: int) -> int | None:
    """Frames a RIFF/WAVE header's ``data`` chunk promises, when more than ``frames`` (the file
    was cut short); ``None`` otherwise. Walks the chunk headers only (a few small reads)."""
    import struct

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # RF64/BW64 (sizes in a ds64 chunk) and anything else: no claim made
        block_align = 0
        for _ in range(64):  # a WAV has a handful of chunks before its data
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if not block_align or size >= _WAV_STREAMING_SIZE:
                    return None
                promised = size // block_align
                return promised if promised > frames else None
            if cid == b"fmt ":
                body = f.read(size + (size & 1))
                if len(body) >= 14:
                    block_align = struct.unpack("<H", body[12:14])[0]
            else:
                f.seek(size + (size & 1), os.SEEK_CUR)
    return None


def _header_frames(path: str | os.PathLike, f) -> int | None:
    """What the header promises beyond ``f.frames`` (see :class:`AudioInfo`)."""
    if f.format in ("WAV", "WAVEX"):
        return _wav_header_frames(path, f.frames)
    return None


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, channels and frame count from the file header (``header_frames`` when the
    header promises more than the file holds)."""
    with _open(path) as f:
        return AudioInfo(sample_rate=f.samplerate, channels=f.channels, frames=f.frames,
                         header_frames=_header_frames(path, f))


def _truncated(path: str | os.PathLike, promised: int, got: int, sr: int, decoded: bool) -> TruncatedAudioError:
    what = "could be decoded" if decoded else "the file holds"
    held = f"only {got / sr:.3f}s {what}" if decoded else f"{what} only {got / sr:.3f}s"
    return TruncatedAudioError(
        path, f"truncated: the header promises {promised / sr:.3f}s but {held} (an interrupted copy or "
        "download?); copy or convert the file again"
    )


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
    unreadable or empty file, a segment starting past the end, a file cut short
    (:class:`TruncatedAudioError`: its header promises more than it holds or decodes to, and the
    span asked for reaches into the missing part), and (with ``check``) NaN/Inf samples, all-zero
    audio, audio shorter than ``min_seconds`` or longer than ``max_seconds``. A segment that runs
    past the end of an intact file is cut at the end, as a reader of a long recording with
    rounded times would expect.
    """
    if duration is not None and duration <= 0:
        raise EmptyAudioError(path, f"segment duration {duration}s is not positive")
    with _open(path) as f:
        sr = f.samplerate
        start = int(round(offset * sr))
        tolerance = int(TRUNCATION_TOLERANCE_SECONDS * sr)
        # What the header promises: a cut WAV's data chunk size (libsndfile reports the shorter,
        # real length as f.frames), else f.frames itself (an MP3's Xing/LAME length, which a cut
        # file no longer decodes to; checked after reading).
        promised = _header_frames(path, f) or f.frames
        wanted_end = promised if duration is None else min(start + int(round(duration * sr)), promised)
        if promised > f.frames and wanted_end > f.frames + tolerance:
            raise _truncated(path, promised, f.frames, sr, decoded=False)
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
        if f.format not in ("WAV", "WAVEX"):
            # Compressed lengths may be estimates: allow 1 % besides the fixed tolerance.
            tolerance = max(tolerance, int(_ESTIMATED_LENGTH_SLACK * promised))
        if wanted_end - start > len(data) + tolerance:
            raise _truncated(path, promised, start + len(data), sr, decoded=True)
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


def write_audio(
    path: str | os.PathLike,
    samples: np.ndarray,
    sample_rate: int,
    *,
    format: str = "WAV",
    subtype: str | None = None,
) -> None:
    """Write ``samples`` to ``path`` atomically (a temporary file, then a rename).

    The file is encoded in memory first: libsndfile, writing a file itself, reports a full disk or
    an unwritable folder as a bare "System error" (``LibsndfileError``); Python's own write gives
    the real ``OSError`` (``ENOSPC``, ``EACCES``, ...), which the CLI turns into its storage-fault
    message and exit status. An interrupted run never leaves a half-written file under ``path``.
    """
    import io

    import soundfile as sf

    from speechllm.utils.fs import atomic_open

    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format=format, subtype=subtype)
    with atomic_open(path, "wb", suffix=f".{format.lower()}") as f:
        f.write(buffer.getbuffer())
