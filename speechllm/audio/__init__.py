"""Audio decoding, resampling and checks. Everything downstream sees mono float32 at 16 kHz."""

from speechllm.audio.io import (
    SAMPLE_RATE,
    AudioError,
    AudioInfo,
    AllZeroAudioError,
    AudioTooShortError,
    EmptyAudioError,
    MissingAudioError,
    NonFiniteAudioError,
    UnreadableAudioError,
    audio_info,
    load_audio,
    resample,
)

__all__ = [
    "SAMPLE_RATE",
    "AllZeroAudioError",
    "AudioError",
    "AudioInfo",
    "AudioTooShortError",
    "EmptyAudioError",
    "MissingAudioError",
    "NonFiniteAudioError",
    "UnreadableAudioError",
    "audio_info",
    "load_audio",
    "resample",
]
