"""Builders of tiny random models with real tokenizers, for unit tests and smoke runs.

They need no network and no model hub: the Llama tokenizer is a byte-level BPE trained in well
under a second on built-in text, with a ChatML chat template; the Whisper tokenizer is the real
one from an installed offline package when available.
"""

from speechllm.testing.tiny import build_tiny_llm, build_tiny_whisper, train_tiny_tokenizer

__all__ = ["build_tiny_llm", "build_tiny_whisper", "train_tiny_tokenizer"]
