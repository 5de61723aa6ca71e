"""Post-hoc weight interpolation θ0 + λ(θ − θ0) of a trained checkpoint, for a sweep of λ.

LoRA's update is ``B·A·scale`` with ``θ0`` = no update, so scaling every ``lora_B`` by λ gives
exactly ``θ0 + λ(θ − θ0)`` on the adapted LLM weights. The modality adapter has no pretrained
``θ0`` (it is created by training) and is copied unchanged. λ = 0 is the base LLM's text
behaviour, λ = 1 the trained model.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from speechllm.errors import SpeechLLMError


class LoraMergeError(SpeechLLMError):
    """A checkpoint that cannot be interpolated (no LoRA weights). (``generate``'s ``MergeError``
    is another meaning: shards that do not join.)"""


def merge_checkpoint(checkpoint: str | Path, out_root: str | Path, lambdas: Sequence[float]) -> list[Path]:
    """Write ``out_root/lambda-<λ>/`` for each λ (one loadable checkpoint each)."""
    from safetensors.torch import load_file, save_file

    from speechllm.models.checkpoint import LORA_DIR, read_checkpoint_config
    from speechllm.utils.fs import atomic_directory

    src = Path(checkpoint)
    meta = read_checkpoint_config(src)
    lora_file = src / LORA_DIR / "adapter_model.safetensors"
    if "lora" not in meta.get("trained", []) or not lora_file.is_file():
        raise LoraMergeError(
            f"{src}: holds no LoRA weights; merging interpolates trained LLM weights toward the base "
            "(train with model.lora.enabled=true)"
        )
    state = load_file(str(lora_file))
    written = []
    for lam in lambdas:
        out = Path(out_root) / f"lambda-{lam:g}"
        with atomic_directory(out, overwrite=True) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            scaled = {k: (v * lam if "lora_B" in k else v).contiguous() for k, v in state.items()}
            save_file(scaled, str(tmp / LORA_DIR / "adapter_model.safetensors"), metadata={"format": "pt"})
        written.append(out)
    return written
