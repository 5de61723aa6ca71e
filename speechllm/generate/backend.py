"""The small interface every generation backend implements, and the choice between them.

A backend takes *rendered prompt strings* (the chat template already applied by
:meth:`GenerationBackend.render`) and returns one :class:`Completion` per prompt, so the HF and
vLLM backends see byte-identical inputs and produce the same rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from speechllm.errors import SpeechLLMError

FinishReason = Literal["stop", "length"]


class GenerationError(SpeechLLMError):
    """Generation cannot run as configured (backend missing, LLM without chat template, ...)."""


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings, recorded in every row's ``generator``. ``temperature == 0`` is greedy."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.greedy:  # sampling knobs mean nothing when decoding greedily
            d = {"max_new_tokens": self.max_new_tokens, "temperature": 0.0,
                 "repetition_penalty": self.repetition_penalty}
        return d

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> SamplingParams:
        """From a :class:`~speechllm.config.schema.SamplingConfig` (plus overrides)."""
        values = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                      top_k=cfg.top_k, repetition_penalty=cfg.repetition_penalty)
        values.update(overrides)
        return cls(**values)


@dataclass
class Completion:
    """One generated continuation: decoded text, its token ids and why it stopped."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason = "stop"


class GenerationBackend(Protocol):
    """What the generation pipeline needs from a backend."""

    name: str

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True) -> str:
        """The LLM's chat template applied to ``messages``."""
        ...

    def count_tokens(self, text: str) -> int:
        """Token count of a rendered prompt (for length-sorted batching)."""
        ...

    def generate(
        self,
        prompts: list[str],
        params: SamplingParams,
        *,
        seeds: list[int] | None = None,
        stop_token_ids: list[int] | None = None,
    ) -> list[Completion]:
        """One completion per prompt. ``seeds[i]`` makes row ``i``'s sampling reproducible on
        its own (independent of the other rows in the batch); ``stop_token_ids`` add to the
        model's end-of-sequence tokens."""
        ...

    def generate_stream(
        self,
        prompts: list[str],
        params: SamplingParams,
        *,
        seeds: list[int] | None = None,
        stop_token_ids: list[int] | None = None,
        batch_size: int = 16,
    ) -> Iterator[tuple[int, Completion]]:
        """Yield ``(index into prompts, completion)`` as rows finish (any order), decoding at most
        ``batch_size`` rows at once where the backend schedules batches itself."""
        ...

    def describe(self) -> dict[str, Any]:
        """Model id or path, revision or content hash, backend, dtype, chat-template hash."""
        ...


def row_seed(seed: int, key: str) -> int:
    """A per-row seed from the run seed and the row id (stable across runs and machines)."""
    return zlib.crc32(f"{seed}:{key}".encode()) + ((seed & 0x7FFFFFFF) << 32)


def text_sha256(text: str | None) -> str | None:
    """Short content hash of a string (chat templates, pools), or None."""
    if text is None:
        return None
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """Content hash of a model folder (every file's relative name and bytes), cached by
    (path, size, mtime) under the speechllm cache so a large model is hashed once."""
    from speechllm.assets import cache_dir

    root = Path(folder).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    stamp = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = hashlib.sha256(json.dumps([str(root), stamp]).encode()).hexdigest()
    cache = cache_dir() / "hashes" / f"{key}.txt"
    if cache.is_file():
        return cache.read_text().strip()
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(root)).encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    value = "sha256:" + digest.hexdigest()[:16]
    try:
        from speechllm.utils.fs import atomic_write_text

        atomic_write_text(cache, value + "\n")
    except OSError:  # a read-only cache only costs a re-hash next time
        pass
    return value


def load_backend(
    name: str,
    llm: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    chat_template: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> GenerationBackend:
    """Load backend ``name`` (``hf`` or ``vllm``) with LLM ``llm`` (``offline:NAME``, folder, hub id).

    ``chat_template`` is a Jinja file used when the LLM ships no template (or to replace it).
    ``trust_remote_code`` is the config's request; only the user can allow it (``utils.remote_code``).
    """
    from speechllm.utils.remote_code import CONFIG_SOURCE
    from speechllm.utils.remote_code import trust_remote_code as allowed_remote_code

    trust_remote_code = allowed_remote_code(trust_remote_code, source=CONFIG_SOURCE, model=llm)
    if name == "hf":
        from speechllm.generate.hf_backend import HFBackend

        return HFBackend(llm, dtype=dtype, device=device, chat_template=chat_template, revision=revision,
                         trust_remote_code=trust_remote_code)
    if name == "vllm":
        from speechllm.generate.vllm_backend import VLLMBackend

        return VLLMBackend(llm, dtype=dtype, chat_template=chat_template, revision=revision,
                           trust_remote_code=trust_remote_code)
    raise GenerationError(f"unknown generation backend {name!r}; known: hf, vllm")


def read_chat_template(path: str | os.PathLike) -> str:
    """A Jinja chat template from a file (clear error when absent or empty)."""
    from speechllm.llm_runtime import read_chat_template as read

    return read(path, error=GenerationError)


def missing_chat_template_error(llm: str) -> GenerationError:
    return GenerationError(
        f"the LLM {llm!r} has no chat template; pass --chat-template FILE (a Jinja template, "
        "e.g. ChatML) or set generation.chat_template"
    )


class TokenizerPrompts:
    """Prompt rendering, tokenising and provenance shared by backends that hold an HF tokenizer
    (``self.tokenizer``) and name their model (``llm_ref``, ``resolved``, ``revision``, ``name``,
    ``dtype_name``)."""

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True) -> str:
        from speechllm.llm_runtime import render_text

        return render_text(self.tokenizer, messages, add_generation_prompt=add_generation_prompt)

    def encode(self, text: str) -> list[int]:
        """Token ids of a rendered prompt (the template already holds any BOS it wants)."""
        from speechllm.llm_runtime import encode_prompt

        return encode_prompt(self.tokenizer, text)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def _provenance(self, hub_revision: str | None = None) -> dict[str, Any]:
        """Model, backend, dtype, revision (or a content hash of a local folder), template hash."""
        from pathlib import Path

        info: dict[str, Any] = {"model": self.llm_ref, "backend": self.name, "dtype": self.dtype_name}
        if Path(self.resolved).is_dir():
            info["path"] = self.resolved
            info["revision"] = self.revision or folder_fingerprint(self.resolved)
        else:
            info["revision"] = self.revision or hub_revision
        info["chat_template"] = text_sha256(self.tokenizer.chat_template)
        return info
