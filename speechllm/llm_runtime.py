"""The LLM runtime every layer above shares: precision names, device choice, loading a causal LM,
rendering a chat prompt, left padding.

One place for each of these, below ``models``, ``generate`` and ``eval``, so that the speech
model's LLM, target generation's LLM and evaluation's base/reference/judge LLMs load the same way
(revision, the remote-code policy of :mod:`speechllm.utils.remote_code`, chat-template file, pad
token, frozen weights) and pad batches the same way. Heavy imports (torch, transformers) happen
inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechllm.errors import ConfigError, ModelResolutionError, SpeechLLMError

#: precision names the configs and command lines take, and torch's names for them
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class ChatTemplateError(SpeechLLMError):
    """A tokenizer without a chat template, or a chat-template file that cannot be used."""


def resolve_device(device: str | None) -> str:
    """``auto`` (or None) -> ``cuda`` when a GPU is visible, else ``cpu``; anything else as given."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def resolve_dtype_name(name: Any, device: str = "cpu", *, error: type[SpeechLLMError] = ConfigError) -> str:
    """``fp32``/``bf16``/``fp16``; ``auto`` (or None) -> bf16 where the hardware runs it fast (CUDA
    with bf16, CPUs with AVX512-BF16/AMX), else fp32 (fp16 is never chosen automatically). A torch
    dtype is named back. Anything else raises ``error``."""
    if name is not None and not isinstance(name, str):  # a torch.dtype
        for short, long in DTYPE_NAMES.items():
            if str(name) == f"torch.{long}":
                return short
        raise error(f"dtype {name}: expected one of auto, {', '.join(DTYPE_NAMES)}")
    if name in (None, "auto"):
        from speechllm.utils.hardware import default_dtype_name

        return default_dtype_name(str(device))
    if name not in DTYPE_NAMES:
        raise error(f"dtype {name!r}: expected one of auto, {', '.join(DTYPE_NAMES)}")
    return name


def torch_dtype(name: Any, device: str = "cpu"):
    """The torch dtype for a precision name (``auto`` resolved for ``device``) or a torch dtype."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    return getattr(torch, DTYPE_NAMES[resolve_dtype_name(name, device)])


def dtype_name_of(model: Any) -> str:
    """The precision name of a model's (first floating-point) weights."""
    for p in model.parameters():
        if p.is_floating_point():
            return resolve_dtype_name(p.dtype)
    return "fp32"


def read_chat_template(path: str | os.PathLike, *, error: type[SpeechLLMError] = ChatTemplateError,
                       field: str = "chat template") -> str:
    """A Jinja chat template from a file (``field`` names the setting in the error)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise error(f"{field} {p}: no such file (give a Jinja template file)")
    text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise error(f"{field} {p}: the file is empty")
    return text


@dataclass
class LoadedLM:
    """A frozen causal LM in eval mode, its tokenizer (pad token set) and where it came from."""

    model: Any
    tokenizer: Any
    resolved: str


def load_causal_lm(ref: str, *, revision: str | None = None, dtype: Any = "fp32", device: str | None = None,
                   trust_remote_code: bool = False, chat_template: str | None = None,
                   empty: bool = False) -> LoadedLM:
    """Load a causal LM and its tokenizer from ``offline:NAME``, a local folder or a hub id.

    ``trust_remote_code`` is the value :mod:`speechllm.utils.remote_code` decided (a model that
    needs its own code while it is not allowed is refused with that module's message);
    ``dtype``: a precision name (``auto`` resolved for ``device``), a torch dtype, or None (the
    checkpoint's own). ``chat_template`` is the text of a template to use instead of the tokenizer's. A tokenizer
    without a pad token pads with its end-of-sequence token. Every weight is frozen; the model
    is in eval mode, on ``device`` when one is given.

    ``empty``: build the model from its config on the meta device (same classes, names, shapes
    and dtype; no weight is read and no memory is used; ``device`` is ignored). The caller fills
    it: FSDP2's non-main ranks receive their shards from the main rank
    (:func:`speechllm.train.distributed.shard_frozen_llm`).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from speechllm.assets import resolve_model
    from speechllm.utils.remote_code import refusing_remote_code

    resolved = resolve_model(ref)
    try:
        with refusing_remote_code(ref):
            tokenizer = AutoTokenizer.from_pretrained(resolved, revision=revision, trust_remote_code=trust_remote_code)
            want = None if dtype is None else torch_dtype(dtype, device or "cpu")
            if empty:
                config = AutoConfig.from_pretrained(resolved, revision=revision, trust_remote_code=trust_remote_code)
                with torch.device("meta"):
                    model = AutoModelForCausalLM.from_config(config, dtype=want or config.dtype,
                                                             trust_remote_code=trust_remote_code)
            else:
                model = AutoModelForCausalLM.from_pretrained(resolved, revision=revision, dtype=want,
                                                             trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelResolutionError(f"cannot load LLM {ref!r} ({e})") from None
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    for p in model.parameters():
        p.requires_grad_(False)
    if device is not None and not empty:
        model.to(device)
    model.eval()
    return LoadedLM(model, tokenizer, str(resolved))


def render_text(tokenizer: Any, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool) -> str:
    """The chat template's rendering of ``messages`` as a string."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"the LLM tokenizer ({getattr(tokenizer, 'name_or_path', '?')}) has no chat template; "
            "set model.chat_template to a Jinja template file"
        )
    text = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )
    if not isinstance(text, str):  # some versions return a list for batched input
        text = text[0]
    return text


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt (the template already holds any BOS it wants)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_chats(tokenizer: Any, chats: Sequence[Sequence[dict[str, Any]]]) -> list[list[int]]:
    """Token ids of each chat rendered with the tokenizer's template plus the generation prompt."""
    return [encode_prompt(tokenizer, render_text(tokenizer, chat, add_generation_prompt=True)) for chat in chats]


def left_pad(rows: Sequence[Sequence[Any]], pad_value: Any, dtype: Any = None):
    """``(tensor, attention_mask)``: rows right-aligned in a ``(len(rows), longest)`` tensor filled
    with ``pad_value`` (so every row's last real entry is in the last column, as generation and
    the shared-prefix KV need); the mask is 1 over real entries."""
    import torch

    dtype = dtype or torch.long
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), pad_value, dtype=dtype)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            out[i, width - len(r):] = torch.tensor(list(r), dtype=dtype)
            mask[i, width - len(r):] = 1
    return out, mask


def positions_of(attention_mask):
    """Position ids counting from 0 at each row's first real token (padding does not shift them)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)
