"""The speech LLM: frozen Whisper encoder with layer taps, adapters (registry), the frozen chat
LLM, the chat layout (one place for the audio-span length and the prompt layout), checkpoints.

Heavy modules (torch, transformers) load on first use of a name that needs them, so that
``from speechllm.models import audio_span_length`` stays light for the data pipeline.
"""

from __future__ import annotations

import importlib
from typing import Any

from speechllm.models.chat_layout import (
    IGNORE_INDEX,
    AudioSlot,
    AudioTooLongError,
    ChatLayoutError,
    ChatSequence,
    RenderedChat,
    adapter_output_length,
    audio_slot,
    audio_span_length,
    build_sequence,
    collate_left_padded,
    count_locators,
    prepare_messages,
    render_chat,
    render_text,
    substitute_audio_text,
    transcript_token_ids,
)

_LAZY = {
    "SpeechLLM": "speechllm.models.speech_llm",
    "SpeechBatch": "speechllm.models.speech_llm",
    "SpeechLLMOutput": "speechllm.models.speech_llm",
    "InvalidAudioError": "speechllm.models.speech_llm",
    "CheckpointError": "speechllm.models.checkpoint",
    "read_checkpoint_config": "speechllm.models.checkpoint",
    "default_encoder_layers": "speechllm.models.encoder",
    "WhisperTapEncoder": "speechllm.models.encoder",
    "build_adapter": "speechllm.models.adapters",
    "adapter_names": "speechllm.models.adapters",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'speechllm.models' has no attribute {name!r}")


__all__ = [
    "IGNORE_INDEX",
    "AudioSlot",
    "AudioTooLongError",
    "ChatLayoutError",
    "ChatSequence",
    "RenderedChat",
    "adapter_output_length",
    "audio_slot",
    "audio_span_length",
    "build_sequence",
    "collate_left_padded",
    "count_locators",
    "prepare_messages",
    "render_chat",
    "render_text",
    "substitute_audio_text",
    "transcript_token_ids",
    *_LAZY,
]
