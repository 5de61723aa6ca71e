"""Audio decoding, resampling and checks. Everything downstream sees mono float32 at 16 kHz."""

from speechllm.audio.io import (
    AUDIO_ERROR_KINDS,
    MIN_SECONDS,
    SAMPLE_RATE,
    AllZeroAudioError,
    AudioError,
    AudioInfo,
    AudioTooLongError,
    AudioTooShortError,
    EmptyAudioError,
    MissingAudioError,
    NonFiniteAudioError,
    TruncatedAudioError,
    UnreadableAudioError,
    audio_info,
    load_audio,
    resample,
)

__all__ = [
    "AUDIO_ERROR_KINDS",
    "MIN_SECONDS",
    "SAMPLE_RATE",
    "AllZeroAudioError",
    "AudioError",
    "AudioInfo",
    "AudioTooLongError",
    "AudioTooShortError",
    "EmptyAudioError",
    "MissingAudioError",
    "NonFiniteAudioError",
    "TruncatedAudioError",
    "UnreadableAudioError",
    "audio_info",
    "load_audio",
    "resample",
]
