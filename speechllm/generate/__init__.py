"""Target generation (stage 3) and text-only replay (stage 4).

- :func:`generate_targets`: the frozen LLM reads each row's seed description where the audio will
  stand and answers an instruction; resumable, shardable, batched (HF or vLLM backend).
- :func:`merge_shards`: join sharded outputs, every id exactly once.
- :func:`generate_replay`: text-only rows in the LLM's own words (pseudo / self-output /
  paraphrase / minimum-change).
- :func:`faithfulness_summary`: how often responses state or contradict labelled attributes.

Heavy libraries (torch, transformers) load only when a model is loaded.
"""

from __future__ import annotations

import importlib
from typing import Any

from speechllm.generate.backend import (
    Completion,
    GenerationBackend,
    GenerationError,
    SamplingParams,
    load_backend,
)
from speechllm.generate.faithfulness import (
    DEFAULT_VOCABULARIES,
    AttributeVocabulary,
    faithfulness_summary,
    format_faithfulness_table,
    write_faithfulness,
)
from speechllm.generate.prompts import (
    DESTA2_INSTRUCTION,
    InstructionSource,
    PromptPoolError,
    builtin_pools,
    description_system_prompt,
    generation_messages,
    read_prompt_pool,
    training_messages,
)
from speechllm.generate.quality import degeneracy

_LAZY = {
    "generate_targets": "speechllm.generate.targets",
    "GenerateSummary": "speechllm.generate.targets",
    "InputRowError": "speechllm.generate.targets",
    "merge_shards": "speechllm.generate.merge",
    "MergeError": "speechllm.generate.merge",
    "MergeReport": "speechllm.generate.merge",
    "generate_replay": "speechllm.generate.replay",
    "ReplaySummary": "speechllm.generate.replay",
    "REPLAY_KINDS": "speechllm.generate.replay",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'speechllm.generate' has no attribute {name!r}")


__all__ = [
    "DEFAULT_VOCABULARIES",
    "DESTA2_INSTRUCTION",
    "AttributeVocabulary",
    "Completion",
    "GenerationBackend",
    "GenerationError",
    "InstructionSource",
    "PromptPoolError",
    "SamplingParams",
    "builtin_pools",
    "degeneracy",
    "description_system_prompt",
    "faithfulness_summary",
    "format_faithfulness_table",
    "generation_messages",
    "load_backend",
    "read_prompt_pool",
    "training_messages",
    "write_faithfulness",
    *_LAZY,
]
