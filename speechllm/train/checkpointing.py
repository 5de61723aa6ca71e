"""Training checkpoints: ``<output_dir>/checkpoints/step-XXXXXXXX/``.

Each folder holds ``model/`` (``SpeechLLM.save_pretrained``: the trained weights only, loadable
with ``SpeechLLM.from_pretrained`` and ``speechllm-infer``) and ``trainer_state.pt`` (optimizer,
scheduler, grad scaler, sampler, every rank's RNG states, step, skip counters, STM masks). The
folder is written to a temporary name and renamed, so a crash never leaves a half checkpoint;
only the last ``keep_last`` are kept.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechllm.errors import SpeechLLMError

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
MODEL_DIR = "model"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class ResumeError(SpeechLLMError):
    """A checkpoint to resume from that is missing or does not fit the run."""


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """``auto``: the newest checkpoint of the run (None if there is none); a path: that folder."""
    if resume is None:
        return None
    if resume == "auto":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ResumeError(f"{path}: not a training checkpoint (no {STATE_FILE}); use --resume auto or a step-* folder")
    return path


def save_checkpoint(output_dir: str | Path, step: int, model, state: dict[str, Any], keep_last: int,
                    *, name: str | None = None) -> Path:
    """Write one checkpoint atomically (main process only) and prune old ones."""
    from speechllm.utils.fs import atomic_directory

    final = checkpoints_dir(output_dir) / (name or f"step-{step:08d}")
    with atomic_directory(final, overwrite=True) as tmp:
        model.save_pretrained(tmp / MODEL_DIR)
        torch.save(state, tmp / STATE_FILE)
    if name is None and keep_last > 0:
        for old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_trained_weights(model, folder: Path) -> None:
    """Load the adapter (and LoRA) weights of ``folder/model`` into ``model`` in place."""
    from safetensors.torch import load_file

    from speechllm.models.checkpoint import ADAPTER_FILE, LORA_DIR

    mdir = folder / MODEL_DIR
    model.adapter.load_state_dict(load_file(str(mdir / ADAPTER_FILE)), strict=True)
    lora_file = mdir / LORA_DIR / "adapter_model.safetensors"
    if lora_file.is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model.llm, load_file(str(lora_file)))
    elif model.config.lora.enabled:
        raise ResumeError(f"{folder}: the run trains LoRA but the checkpoint has no {LORA_DIR}/ folder")


def load_state(folder: Path) -> dict[str, Any]:
    return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
