"""vLLM backend (optional extra: ``pip install 'speechllm[vllm]'``), for GPU throughput.

It receives the same rendered prompts as the HF backend (the chat template is applied by the
HF tokenizer in :meth:`VLLMBackend.render`, so both backends see identical text) and returns the
same :class:`Completion` records. vLLM schedules its own batches (continuous batching); the
pipeline's ``batch_size`` only sets how many prompts are handed over at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from speechllm.generate.backend import (
    Completion,
    GenerationError,
    SamplingParams,
    TokenizerPrompts,
    missing_chat_template_error,
    read_chat_template,
)

INSTALL_HINT = (
    "the vllm backend needs the vllm package (GPU machines): pip install 'speechllm[vllm]' "
    "(or pip install vllm); on CPU use generation.backend=hf"
)

def import_vllm():
    """Import vllm or raise a :class:`GenerationError` with the install command."""
    try:
        import vllm
    except ImportError as e:
        raise GenerationError(f"{INSTALL_HINT} ({e})") from None
    return vllm


class VLLMBackend(TokenizerPrompts):
    """Generation through ``vllm.LLM.generate`` on token-id prompts."""

    name = "vllm"

    def __init__(self, llm: str, *, dtype: str = "auto", chat_template: str | None = None,
                 revision: str | None = None, trust_remote_code: bool = False):
        vllm = import_vllm()
        from transformers import AutoTokenizer

        from speechllm.assets import resolve_model
        from speechllm.llm_runtime import DTYPE_NAMES, resolve_dtype_name
        from speechllm.utils.remote_code import refusing_remote_code

        self.llm_ref = llm
        self.resolved = resolve_model(llm)
        self.revision = revision
        self.dtype_name = dtype
        with refusing_remote_code(llm):
            self.tokenizer = AutoTokenizer.from_pretrained(self.resolved, revision=revision,
                                                           trust_remote_code=trust_remote_code)
        if chat_template:
            self.tokenizer.chat_template = read_chat_template(chat_template)
        if not getattr(self.tokenizer, "chat_template", None):
            raise missing_chat_template_error(llm)
        self._vllm = vllm
        # vllm's own "auto" reads the checkpoint's dtype; the names are the one precision table's.
        vllm_dtype = "auto" if dtype == "auto" else DTYPE_NAMES[resolve_dtype_name(dtype, error=GenerationError)]
        self.engine = vllm.LLM(model=self.resolved, revision=revision, dtype=vllm_dtype,
                               trust_remote_code=trust_remote_code, tokenizer=self.resolved)

    def describe(self) -> dict[str, Any]:
        return self._provenance()

    def generate_stream(self, prompts: list[str], params: SamplingParams, *, seeds: list[int] | None = None,
                        stop_token_ids: list[int] | None = None, batch_size: int = 16) -> Iterator[tuple[int, Completion]]:
        # vLLM schedules its own continuous batches: hand it everything at once.
        yield from enumerate(self.generate(prompts, params, seeds=seeds, stop_token_ids=stop_token_ids))

    def generate(self, prompts: list[str], params: SamplingParams, *, seeds: list[int] | None = None,
                 stop_token_ids: list[int] | None = None) -> list[Completion]:
        if not prompts:
            return []
        sampling = []
        for i in range(len(prompts)):
            sampling.append(self._vllm.SamplingParams(
                max_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k if params.top_k > 0 else -1,
                repetition_penalty=params.repetition_penalty,
                seed=None if params.greedy or seeds is None else int(seeds[i]) % (2**31),
                stop_token_ids=list(stop_token_ids or []),
            ))
        inputs = [{"prompt_token_ids": self.encode(p)} for p in prompts]
        outputs = self.engine.generate(inputs, sampling, use_tqdm=False)
        completions = []
        for out in outputs:
            best = out.outputs[0]
            reason = "length" if best.finish_reason == "length" else "stop"
            completions.append(Completion(text=best.text.strip(), token_ids=list(best.token_ids),
                                          finish_reason=reason))  # type: ignore[arg-type]
        return completions
