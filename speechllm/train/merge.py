"""Post-hoc weight interpolation θ0 + λ(θ − θ0) of a trained checkpoint, for a sweep of λ.

LoRA's update is ``B·A·scale`` with ``θ0`` = no update, so scaling every ``lora_B`` by λ gives
exactly ``θ0 + λ(θ − θ0)`` on the adapted LLM weights. IA3 vectors interpolate toward 1 (no
rescaling), exactly. LLM weights trained in place (``model.llm_train``, ``llm_params.safetensors``)
interpolate toward the base LLM's values. DoRA is refused: its magnitude vector's θ0 is the base
weights' column norms, which the checkpoint does not hold. The modality adapter has no pretrained
``θ0`` (it is created by training) and is copied unchanged. λ = 0 is the base LLM's text
behaviour, λ = 1 the trained model.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from speechllm.errors import SpeechLLMError


class LoraMergeError(SpeechLLMError):
    """A checkpoint that cannot be interpolated (no trained LLM weights, or DoRA). (``generate``'s
    ``MergeError`` is another meaning: shards that do not join.)"""


def merge_checkpoint(checkpoint: str | Path, out_root: str | Path, lambdas: Sequence[float]) -> list[Path]:
    """Write ``out_root/lambda-<λ>/`` for each λ (one loadable checkpoint each)."""
    from safetensors.torch import load_file, save_file

    from speechllm.models.checkpoint import LLM_PARAMS_FILE, LORA_DIR, read_checkpoint_config
    from speechllm.utils.fs import atomic_directory

    src = Path(checkpoint)
    meta = read_checkpoint_config(src)
    trained = meta.get("trained", [])
    lora_file = src / LORA_DIR / "adapter_model.safetensors"
    has_peft = "lora" in trained and lora_file.is_file()
    if "prompt" in trained:
        raise LoraMergeError(f"{src}: a prompt-tuning checkpoint; the base LLM has no virtual tokens to interpolate "
                             "toward, so λ interpolation is refused (train without model.prompt_tuning to merge)")
    if "prefix" in trained:
        raise LoraMergeError(f"{src}: a prefix-tuning checkpoint; the base LLM has no prefix to interpolate toward, "
                             "so λ interpolation is refused (train without model.prefix_tuning to merge)")
    if not has_peft and "llm_params" not in trained:
        raise LoraMergeError(
            f"{src}: holds no trained LLM weights; merging interpolates them toward the base "
            "(train with model.lora.enabled=true or model.llm_train)"
        )
    state = load_file(str(lora_file)) if has_peft else {}
    if has_peft:
        peft_cfg = json.loads((src / LORA_DIR / "adapter_config.json").read_text(encoding="utf-8"))
        if peft_cfg.get("use_dora"):
            raise LoraMergeError(f"{src}: a DoRA checkpoint; its magnitude's base value is not stored, so λ "
                                 "interpolation is refused (the forgetting study interpolates DoRA in memory)")
    in_place, base = {}, {}
    if "llm_params" in trained:
        from speechllm.models import SpeechLLM

        in_place = load_file(str(src / LLM_PARAMS_FILE))
        base = {n: v.to(in_place[n].dtype) for n, v in SpeechLLM.from_pretrained(src).llm_base_values.items()}
    written = []
    for lam in lambdas:
        out = Path(out_root) / f"lambda-{lam:g}"
        with atomic_directory(out, overwrite=True) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            if has_peft:
                scaled = {k: (v * lam if "lora_B" in k else 1 + lam * (v - 1) if "ia3_l" in k else v).contiguous()
                          for k, v in state.items()}
                save_file(scaled, str(tmp / LORA_DIR / "adapter_model.safetensors"), metadata={"format": "pt"})
            if in_place:
                mixed = {k: (base[k] + lam * (v - base[k])).contiguous() for k, v in in_place.items()}
                save_file(mixed, str(tmp / LLM_PARAMS_FILE), metadata={"format": "pt"})
        written.append(out)
    return written
