"""What the frozen LLM is asked: instructions (fixed or drawn from a prompt pool) and the
conversation built around the seed description.

Two conversations are built per row, from one template, through :mod:`speechllm.models.chat_layout`:

- the *training* messages, stored in the row: the user turn holds the audio locator
  (``<|AUDIO|>``) and then the instruction — exactly what training and inference will render;
- the *generation* messages: the same, with the locator replaced by the seed description
  (``substitute_audio_text``), wrapped in the same ``audio_start``/``audio_end`` text.

So the LLM reads the description in the very place where the audio span will stand.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechllm.errors import ConfigError, SpeechLLMError

if TYPE_CHECKING:
    from speechllm.config import ModelConfig

Message = dict[str, Any]

#: DeSTA2's fixed instruction.
DESTA2_INSTRUCTION = "What can you hear from the audio?"
BUILTIN_POOL_PREFIX = "builtin:"


def description_system_prompt(config: ModelConfig) -> str:
    """A system prompt telling the LLM that the wrapped text describes an audio clip.

    Measured with SmolLM2-135M-Instruct on "What is the gender of the speaker?": without it the
    model answered "unknown" for 3 of 3 female descriptions; with it, 5 of 5 descriptions right.
    Opt-in (``generation.system_prompt``): whatever system prompt generation uses becomes part of
    the training conversation too.
    """
    return (f"The text between {config.audio_start} and {config.audio_end} describes an audio clip. "
            "Answer from it.")


#: Generator-only answer form for clips with no speech, added by ``builtin:describe-no-speech``.
#: SmolLM2-135M reading "No speech, no speaker, only music." with ``builtin:describe`` invents a
#: speaker for 27 of 36 such descriptions and says no one speaks for 8, 7 of them by copying the
#: description back; with this note 8 of 36, none a copy, and the same gender answers on speech
#: (egs/synthetic/local/teacher_descriptions.py, egs/mini/RESULTS.md).
NO_SPEECH_ANSWER_NOTE = 'Some clips have no speech: then answer "No one is speaking; the clip is only <the sound>."'
#: The built-in generator contexts by name (``generation.context_prompt``).
BUILTIN_CONTEXTS: dict[str, Callable[[ModelConfig], str]] = {
    "builtin:describe": description_system_prompt,
    "builtin:describe-no-speech": lambda config: f"{description_system_prompt(config)} {NO_SPEECH_ANSWER_NOTE}",
}


def generation_context(system_prompt: str | None, context_prompt: str | None, config: ModelConfig) -> str | None:
    """The system turn the LLM sees while generating targets, or None to use the training one.

    ``context_prompt`` is shown to the generator only: the stored training conversation keeps
    ``system_prompt`` alone, so the adapter learns to make the LLM answer as if it had been told
    how to read the description, without being told at inference (context distillation).
    """
    if not context_prompt:
        return None
    if context_prompt in BUILTIN_CONTEXTS:
        context_prompt = BUILTIN_CONTEXTS[context_prompt](config)
    elif context_prompt.startswith(BUILTIN_POOL_PREFIX):
        # A mistyped built-in would otherwise reach the generator as its literal system prompt.
        raise ConfigError(f"generation.context_prompt: unknown {context_prompt!r}; "
                          f"built-in: {', '.join(BUILTIN_CONTEXTS)}")
    return f"{system_prompt}\n{context_prompt}" if system_prompt else context_prompt


class PromptPoolError(SpeechLLMError):
    """A prompt pool that cannot be read or holds no instruction."""


@dataclass(frozen=True)
class InstructionSource:
    """Where each row's instruction comes from: one fixed string, or a pool drawn per row.

    A draw depends only on ``(seed, row id)``, so a row gets the same instruction whatever the
    sharding, batching or restart history.
    """

    fixed: str = DESTA2_INSTRUCTION
    pool: tuple[str, ...] = ()
    pool_name: str | None = None
    seed: int = 0

    def instruction_for(self, row_id: str) -> str:
        """The instruction of row ``row_id``."""
        if not self.pool:
            return self.fixed
        rng = random.Random(f"{self.seed}:{row_id}")
        return self.pool[rng.randrange(len(self.pool))]

    def describe(self) -> dict[str, Any]:
        """How instructions were chosen, for the ``generator`` record of each row."""
        if not self.pool:
            return {"instruction": self.fixed}
        digest = hashlib.sha256("\n".join(self.pool).encode("utf-8")).hexdigest()[:16]
        return {"prompt_pool": self.pool_name, "prompt_pool_sha256": digest, "prompt_pool_size": len(self.pool),
                "seed": self.seed}


def builtin_pools() -> list[str]:
    """Names of the prompt pools shipped with the package (``builtin:NAME``)."""
    folder = resources.files("speechllm").joinpath("resources", "prompt_pools")
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt"))


def read_prompt_pool(ref: str | Path) -> tuple[str, ...]:
    """Instructions from a pool file: one a line; blank lines and ``#`` comments are ignored.

    ``ref`` is a path or ``builtin:NAME`` (e.g. ``builtin:attributes``, the shipped pool of
    direct attribute questions).
    """
    ref = str(ref)
    if ref.startswith(BUILTIN_POOL_PREFIX):
        name = ref[len(BUILTIN_POOL_PREFIX):]
        item = resources.files("speechllm").joinpath("resources", "prompt_pools", f"{name}.txt")
        if not item.is_file():
            raise PromptPoolError(
                f"prompt pool {ref!r}: no such built-in pool; built-in: "
                + ", ".join(BUILTIN_POOL_PREFIX + n for n in builtin_pools())
            )
        text = item.read_text(encoding="utf-8")
    else:
        path = Path(ref).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PromptPoolError(
                f"prompt pool {path}: no such file (give a text file with one instruction a line, "
                f"or {BUILTIN_POOL_PREFIX}attributes)"
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise PromptPoolError(f"prompt pool {path}: cannot be read as UTF-8 text ({e})") from None
    lines = tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )
    if not lines:
        raise PromptPoolError(f"prompt pool {ref}: holds no instruction (one a line; '#' lines are comments)")
    return lines


def instruction_source(instruction: str, prompt_pool: str | None, seed: int) -> InstructionSource:
    """The :class:`InstructionSource` of a generation config (pool wins over the fixed string)."""
    if prompt_pool:
        return InstructionSource(fixed=instruction, pool=read_prompt_pool(prompt_pool),
                                 pool_name=str(prompt_pool), seed=seed)
    return InstructionSource(fixed=instruction, seed=seed)


def training_messages(instruction: str, config: ModelConfig, system_prompt: str | None = None) -> list[Message]:
    """The conversation that training uses for an audio row: optional system turn, then one user
    turn with the audio locator followed by the instruction (no assistant turn)."""
    messages: list[Message] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": f"{config.audio_locator}\n{instruction}"})
    return messages


def generation_messages(messages: list[Message], description: str, config: ModelConfig) -> list[Message]:
    """``messages`` with the audio locator replaced by the seed description (same wrapping as
    the audio span gets in training)."""
    from speechllm.models.chat_layout import substitute_audio_text

    return substitute_audio_text(messages, [description], config)


def text_messages(instruction: str, system_prompt: str | None = None) -> list[Message]:
    """A text-only conversation (replay rows): optional system turn + the user's instruction."""
    messages: list[Message] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": instruction})
    return messages
