"""Update scopes: which LLM weights a run trains besides the modality adapter.

Three kinds, combinable: none (DeSTA2: the LLM is frozen), a peft method on ``model.lora.
target_modules`` (``model.lora.method``: LoRA, DoRA, IA3; peft injects them into the modules, so
the model's one forward, which calls the decoder directly, runs them), and LLM weights trained in
place, chosen by name (``model.llm_train``: regular expressions and/or the last N decoder layers).

Prompt tuning (``model.prompt_tuning``) is in the chat layout itself (:meth:`SpeechLLM.sequence`,
:meth:`SpeechLLM.embed`), not peft's. Prefix tuning (``model.prefix_tuning``) is not peft's either
(peft applies it in ``PeftModel.forward``, which :meth:`SpeechLLM.response_forward` does not call):
:mod:`speechllm.models.prefix_tuning` pre-fills the KV cache in :meth:`SpeechLLM.llm_inputs`.
"""

from __future__ import annotations

import re

import torch

from speechllm.errors import ConfigError

PEFT_METHODS = ("lora", "dora", "ia3")


def peft_config(lora_cfg):
    """The peft config for ``model.lora`` (method lora, dora or ia3)."""
    from peft import IA3Config
    from peft import LoraConfig as PeftLoraConfig

    targets = list(lora_cfg.target_modules)
    if lora_cfg.method == "ia3":
        # IA3 rescales the outputs of targets; none is declared feed-forward (its input side).
        return IA3Config(target_modules=targets, feedforward_modules=[], task_type="CAUSAL_LM")
    return PeftLoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                          target_modules=targets, use_dora=lora_cfg.method == "dora", task_type="CAUSAL_LM")


def decoder_layer_count(causal_lm) -> int:
    """Number of decoder layers of an HF causal LM."""
    n = getattr(causal_lm.config, "num_hidden_layers", None)
    if n is None:
        raise ConfigError("model.llm_train.last_layers: the LLM's config names no num_hidden_layers")
    return int(n)


def selected_llm_parameters(causal_lm, train_cfg) -> dict[str, torch.nn.Parameter]:
    """The base LLM's parameters that ``model.llm_train`` selects, by their names in ``causal_lm``
    (peft's LoRA weights are never among them). A pattern that matches nothing is an error."""
    params = {n: p for n, p in causal_lm.named_parameters() if ".lora_" not in n and "ia3_" not in n}
    chosen: dict[str, torch.nn.Parameter] = {}
    for pattern in train_cfg.patterns:
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"model.llm_train.patterns: {pattern!r} is not a regular expression ({e})") from None
        hits = {n: p for n, p in params.items() if rx.search(n)}
        if not hits:
            sample = ", ".join(list(params)[:3])
            raise ConfigError(f"model.llm_train.patterns: {pattern!r} matches no LLM parameter (names look like "
                              f"{sample}, ...)")
        chosen.update(hits)
    if train_cfg.last_layers:
        total = decoder_layer_count(causal_lm)
        if train_cfg.last_layers > total:
            raise ConfigError(f"model.llm_train.last_layers: {train_cfg.last_layers} > the LLM's {total} layers")
        layer_rx = re.compile(r"\.layers\.(\d+)\.")
        for n, p in params.items():
            m = layer_rx.search(n)
            if m and int(m.group(1)) >= total - train_cfg.last_layers:
                chosen[n] = p
    return chosen


def enable_llm_train(causal_lm, train_cfg) -> list[str]:
    """Unfreeze the weights ``model.llm_train`` selects; return their names."""
    chosen = selected_llm_parameters(causal_lm, train_cfg)
    for p in chosen.values():
        p.requires_grad_(True)
    return sorted(chosen)


def has_llm_update(model_cfg) -> bool:
    """Whether ``model`` config trains any LLM weight (a peft method, weights by name, a prompt, a prefix)."""
    lt = model_cfg.llm_train
    return bool(model_cfg.lora.enabled or lt.patterns or lt.last_layers or model_cfg.prompt_tuning.num_tokens
                or model_cfg.prefix_tuning.num_tokens)
