"""Training checkpoints: ``<output_dir>/checkpoints/step-XXXXXXXX/``.

Each folder holds ``model/`` (``SpeechLLM.save_pretrained``: the trained weights only, loadable
with ``SpeechLLM.from_pretrained`` and ``speechllm-infer``) and the trainer state (optimizer,
scheduler, grad scaler, sampler, every rank's RNG states, step, skip counters, STM masks) as
``trainer_state.safetensors`` (every tensor and array) plus ``trainer_state.json`` (the rest, with
references to the tensors). Neither format can run code when read, so resuming from a checkpoint
someone else wrote is safe; a ``trainer_state.pt`` written by older versions is still read, with
``torch.load(weights_only=True)`` and only numpy's array types added, never by plain unpickling.

The folder is written to a temporary name and renamed, so a crash never leaves a half checkpoint
under a ``step-*`` name; temporary folders a killed write left behind are removed by the next
save. ``--resume auto`` takes the newest complete checkpoint and skips, with a warning, newer ones
whose files are missing, empty or truncated. Only the last ``keep_last`` are kept.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import random
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechllm.errors import SpeechLLMError

log = logging.getLogger(__name__)

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
LEGACY_STATE_FILE = "trainer_state.pt"  # pickle, written before format 1; read with weights_only=True
STATE_FORMAT = "speechllm-trainer-state"
STATE_FORMAT_VERSION = 1
MODEL_DIR = "model"
RUN_LOGS = ("metrics.jsonl", "valid.jsonl")  # one JSON row per step; truncated to the resumed step
_STEP_DIR = re.compile(r"^step-(\d{8})$")
# atomic_directory's working names: `.NAME.tmp-XXXX` (being written) and `.NAME.old-PID` (being replaced).
_TEMP_DIR = re.compile(r"^\.(?P<name>.+)\.(tmp|old)-[^/]*$")


class ResumeError(SpeechLLMError):
    """A checkpoint to resume from that is missing, incomplete, refused or does not fit the run."""


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
    """Every ``step-*`` folder of the run, oldest first (complete or not: see :func:`checkpoint_problem`)."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if _STEP_DIR.match(p.name) and p.is_dir()), key=lambda p: p.name)


def has_trainer_state(folder: Path) -> bool:
    return (folder / STATE_JSON).is_file() or (folder / LEGACY_STATE_FILE).is_file()


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (a file missing, empty or truncated), or None.

    Reads the JSON files and the safetensors headers only; whether a legacy ``trainer_state.pt``
    holds only allowed types is found when it is loaded (:func:`load_state`).
    """
    from speechllm.models.checkpoint import (
        CheckpointError,
        read_checkpoint_config,
        safetensors_problem,
    )

    try:
        read_checkpoint_config(folder / MODEL_DIR)  # config, adapter and LoRA files present and readable
    except CheckpointError as e:
        return str(e)
    if (folder / STATE_JSON).is_file():
        try:
            meta, tensor_names = _read_state_json(folder)
        except ResumeError as e:
            return str(e)
        problem = safetensors_problem(folder / STATE_TENSORS)
        if problem is not None:
            return f"{folder / STATE_TENSORS}: {problem}"
        from safetensors import safe_open

        with safe_open(str(folder / STATE_TENSORS), framework="pt") as f:
            missing = tensor_names - set(f.keys())
        if missing:
            return f"{folder / STATE_TENSORS}: lacks tensors {sorted(missing)[:3]} named in {STATE_JSON}"
        return None
    legacy = folder / LEGACY_STATE_FILE
    if legacy.is_file():
        if legacy.stat().st_size == 0:
            return f"{legacy}: empty"
        with open(legacy, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"  # torch.save's format since torch 1.6
        if is_zip and not zipfile.is_zipfile(legacy):
            return f"{legacy}: truncated (the zip archive has no central directory)"
        return None
    return f"{folder}: no trainer state ({STATE_JSON})"


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """``auto``: the newest complete checkpoint of the run (None if there is none; newer incomplete
    ones are skipped with a warning); a path: that folder, which must be complete."""
    if resume is None:
        return None
    if resume == "auto":
        skipped: list[str] = []
        for folder in reversed(list_checkpoints(output_dir)):
            problem = checkpoint_problem(folder)
            if problem is None:
                for reason in skipped:
                    log.warning("skipping an incomplete checkpoint (%s); resuming from %s", reason, folder)
                return folder
            skipped.append(problem)
        if skipped:
            raise ResumeError(
                f"{checkpoints_dir(output_dir)}: no complete checkpoint to resume from ({'; '.join(skipped)}); "
                "remove the broken step-* folders to start the run afresh"
            )
        return None
    path = Path(resume)
    if not path.is_dir() or not has_trainer_state(path):
        raise ResumeError(f"{path}: not a training checkpoint (no {STATE_JSON}); use --resume auto or a step-* folder")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise ResumeError(f"{path}: incomplete checkpoint: {problem}; resume from another step-* folder "
                          "or use --resume auto")
    return path


def remove_stale_temp(output_dir: str | Path) -> None:
    """Remove the temporary folders a killed checkpoint write left behind (``.step-*.tmp-*``,
    ``.final.tmp-*``). Main process only: nothing else writes into a run folder."""
    out = Path(output_dir)
    candidates = list(checkpoints_dir(out).glob(".*")) + list(out.glob(".final.*"))
    for path in candidates:
        if path.is_dir() and _TEMP_DIR.match(path.name):
            log.info("removing %s, left by an interrupted checkpoint write", path)
            shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(output_dir: str | Path, step: int, model, state: dict[str, Any], keep_last: int,
                    *, name: str | None = None) -> Path:
    """Write one checkpoint atomically (main process only) and prune old ones."""
    from speechllm.utils.fs import atomic_directory

    remove_stale_temp(output_dir)
    final = checkpoints_dir(output_dir) / (name or f"step-{step:08d}")
    with atomic_directory(final, overwrite=True) as tmp:
        model.save_pretrained(tmp / MODEL_DIR)
        save_state(state, tmp)
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


def truncate_run_logs(output_dir: str | Path, step: int) -> None:
    """Drop the rows of ``metrics.jsonl`` / ``valid.jsonl`` written after ``step``: a resume from
    ``step`` runs those steps again, which would otherwise be listed twice. A line torn by the
    killed run is dropped too."""
    from speechllm.utils.fs import atomic_write_text

    for name in RUN_LOGS:
        path = Path(output_dir) / name
        if not path.is_file():
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        kept = [line for line in lines if _logged_step(line) is not None and _logged_step(line) <= step]
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(line + "\n" for line in kept))
            log.info("%s: dropped %d rows after step %d (resuming from step %d runs them again)",
                     path, len(lines) - len(kept), step, step)


def _logged_step(line: str) -> int | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    value = row.get("step") if isinstance(row, dict) else None
    return value if isinstance(value, int) else None


# ---------------------------------------------------------------- trainer state: safetensors + JSON


def save_state(state: dict[str, Any], folder: Path) -> None:
    """Write ``state`` as ``trainer_state.safetensors`` + ``trainer_state.json`` in ``folder``."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, tensors, set(), "state")
    save_file(tensors, str(folder / STATE_TENSORS), metadata={"format": "pt"})
    meta = {"format": STATE_FORMAT, "format_version": STATE_FORMAT_VERSION, "state": encoded}
    (folder / STATE_JSON).write_text(json.dumps(meta) + "\n", encoding="utf-8")


def load_state(folder: Path) -> dict[str, Any]:
    """The trainer state of checkpoint ``folder`` (current format, else a legacy ``trainer_state.pt``).

    Nothing in either file can run code: safetensors and JSON hold data only, and the legacy
    pickle is read with ``weights_only=True``; a pickle asking for anything else is refused.
    """
    if (folder / STATE_JSON).is_file():
        from safetensors.torch import load_file

        meta, _ = _read_state_json(folder)
        try:
            tensors = load_file(str(folder / STATE_TENSORS))
        except Exception as e:  # safetensors raises its own error type for a bad file
            raise ResumeError(f"{folder / STATE_TENSORS}: unreadable ({e}); resume from another checkpoint") from None
        try:
            state = _decode(meta["state"], tensors)
        except (KeyError, TypeError, ValueError) as e:
            raise ResumeError(f"{folder / STATE_JSON}: malformed trainer state ({e}); resume from another "
                              "checkpoint") from None
        if not isinstance(state, dict):
            raise ResumeError(f"{folder / STATE_JSON}: malformed trainer state (not a mapping)")
        return state
    legacy = folder / LEGACY_STATE_FILE
    if legacy.is_file():
        return _load_legacy_state(legacy)
    raise ResumeError(f"{folder}: no trainer state ({STATE_JSON}); use --resume auto or a step-* folder")


def _read_state_json(folder: Path) -> tuple[dict[str, Any], set[str]]:
    """The parsed ``trainer_state.json`` and the tensor names it refers to."""
    path = folder / STATE_JSON
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResumeError(f"{path}: truncated or unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT or "state" not in meta:
        raise ResumeError(f"{path}: not a speechllm trainer state (no 'format': {STATE_FORMAT!r})")
    if not isinstance(meta.get("format_version"), int) or meta["format_version"] > STATE_FORMAT_VERSION:
        raise ResumeError(f"{path}: trainer state format {meta.get('format_version')!r} is newer than this "
                          f"speechllm reads ({STATE_FORMAT_VERSION}); upgrade speechllm")
    names: set[str] = set()
    _collect_tensor_names(meta["state"], names)
    return meta, names


def _encode(value: Any, tensors: dict[str, torch.Tensor], storages: set[int], where: str) -> Any:
    """``value`` as JSON: tensors and arrays go to ``tensors`` and are referred to by name; tuples,
    dicts with non-string keys and non-finite floats are tagged so they come back as they were."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous()
        if tensor.untyped_storage().data_ptr() in storages:  # safetensors refuses shared memory
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        name = f"t{len(tensors)}"
        tensors[name] = tensor
        return {"__tensor__": name}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"trainer state {where}: cannot store an object array")
        name = f"t{len(tensors)}"
        tensors[name] = torch.frombuffer(bytearray(value.tobytes()), dtype=torch.uint8) if value.nbytes \
            else torch.empty(0, dtype=torch.uint8)
        return {"__ndarray__": name, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return _encode(value.item(), tensors, storages, where)
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, storages, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, storages, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, tensors, storages, f"{where}.{k}") for k, v in value.items()}
        return {"__items__": [[_encode(k, tensors, storages, where), _encode(v, tensors, storages, f"{where}[{k!r}]")]
                              for k, v in value.items()]}
    raise TypeError(f"trainer state {where}: cannot store a {type(value).__name__} (tensors, arrays and "
                    "plain data only)")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`_encode`; anything else in the file is a ``ValueError``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        raise ValueError(f"unexpected {type(value).__name__}")
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        dtype = np.dtype(value["dtype"])
        if dtype.hasobject:
            raise ValueError("object arrays are not allowed")
        raw = tensors[value["__ndarray__"]].numpy().tobytes()
        return np.frombuffer(raw, dtype=dtype).reshape([int(n) for n in value["shape"]]).copy()
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    if "__float__" in value:
        if value["__float__"] not in ("nan", "inf", "-inf"):
            raise ValueError(f"bad float {value['__float__']!r}")
        return float(value["__float__"])
    bad = [k for k in value if k.startswith("__")]
    if bad:
        raise ValueError(f"unknown tag {bad[0]!r}")
    return {k: _decode(v, tensors) for k, v in value.items()}


def _collect_tensor_names(value: Any, names: set[str]) -> None:
    if isinstance(value, list):
        for v in value:
            _collect_tensor_names(v, names)
    elif isinstance(value, dict):
        for key in ("__tensor__", "__ndarray__"):
            if isinstance(value.get(key), str):
                names.add(value[key])
        for v in value.values():
            _collect_tensor_names(v, names)


def _load_legacy_state(path: Path) -> dict[str, Any]:
    """A ``trainer_state.pt`` of an older version: ``weights_only=True`` plus numpy's array
    types (the numpy RNG state), so no other object can be built and no code can run."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    allowed = [np.ndarray, np.dtype, _reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"),
               (_reconstruct, "numpy._core.multiarray._reconstruct"),
               *(type(np.dtype(code)) for code in "?bBhHiIlLqQefdg")]
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note on pickle protocols: noise here
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)|(Unsupported operand \d+)", str(e))
        what = (f"it asks for {found.group(1)}" if found.group(1) else found.group(2)) if found else "not plain data"
        raise ResumeError(
            f"{path}: refused: not a plain-data trainer state ({what}); it was not unpickled, as loading it "
            "could run code. Resume only from checkpoints written by speechllm, or start afresh without --resume"
        ) from None
    except Exception as e:  # a truncated zip or pickle: torch raises RuntimeError, EOFError, ...
        raise ResumeError(f"{path}: truncated or unreadable ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                          "resume from another checkpoint") from None
    if not isinstance(state, dict):
        raise ResumeError(f"{path}: not a trainer state (a {type(state).__name__}, not a mapping)")
    return state
