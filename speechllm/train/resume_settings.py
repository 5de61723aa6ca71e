"""The settings check of ``train --resume``.

A resumed run continues the optimizer state, the learning-rate schedule and the data order of a
checkpoint, and those belong to the settings the checkpoint was trained with. A resume whose
``model``, ``data`` or ``train`` settings differ from the checkpoint's is therefore refused, with
every changed key named (old -> new). The settings that may change are marked in the schema
(``_f(..., on_resume="why")`` in :mod:`speechllm.config.schema`; docs/training.md lists them): they
are applied, and recorded in ``<output_dir>/config_changes.jsonl``. ``generation`` settings are
not compared: training does not read them.

Each checkpoint keeps the resolved config it was trained with (``step-*/config.yaml``, written by
:meth:`speechllm.train.trainer.Trainer.save`); a checkpoint written before that is compared with
its run's ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from speechllm.config import RunConfig, iter_config_fields, to_dict
from speechllm.config.loader import read_yaml
from speechllm.errors import ConfigError
from speechllm.train.checkpointing import ResumeError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"  # the resolved config, in a checkpoint folder and in the run folder
CHANGES_FILE = "config_changes.jsonl"
COMPARED_SECTIONS = ("model", "data", "train")
_MISSING = object()


def saved_config_path(folder: Path) -> Path | None:
    """The config checkpoint ``folder`` was trained with: its own ``config.yaml``, else the one of
    its run (checkpoints live in ``<output_dir>/checkpoints/step-*``), else None."""
    for path in (folder / CONFIG_FILE, folder.parent.parent / CONFIG_FILE):
        if path.is_file():
            return path
    return None


def check_resume_settings(config: RunConfig, folder: Path) -> dict[str, tuple[Any, Any]]:
    """Compare ``config`` with the config checkpoint ``folder`` was trained with.

    Raises :class:`ResumeError` naming every changed setting that may not change on resume;
    returns the changed ones that may, as ``{dotted_key: (old, new)}``.
    """
    saved = saved_config_path(folder)
    if saved is None:
        log.warning("%s: no %s beside it or in its run folder: resuming without comparing settings",
                    folder, CONFIG_FILE)
        return {}
    try:
        old = read_yaml(saved)
    except ConfigError as e:
        raise ResumeError(f"{e}; it records the settings checkpoint {folder} was trained with") from None
    refused: list[str] = []
    allowed: dict[str, tuple[Any, Any]] = {}
    for key, value, f in iter_config_fields(config):
        if key.split(".", 1)[0] not in COMPARED_SECTIONS:
            continue
        before, now = _lookup(old, key), to_dict(value)
        if before is _MISSING or before == now:  # missing: a setting newer than the checkpoint
            continue
        if "on_resume" in f.metadata:
            allowed[key] = (before, now)
        else:
            refused.append(f"{key} {json.dumps(before)} -> {json.dumps(now)}")
    if refused:
        raise ResumeError(
            f"{folder}: this command changes settings the checkpoint was trained with: {', '.join(refused)} "
            f"(saved in {saved}); its optimizer state, schedule and data order belong to them: restore these "
            "settings, or start a new run in another train.output_dir"
        )
    return allowed


def record_resume_changes(output_dir: Path, folder: Path, step: int, changes: dict[str, tuple[Any, Any]]) -> None:
    """Log the allowed changes of a resume and append them to ``config_changes.jsonl`` (the run's
    ``config.yaml`` holds the new values, the checkpoint's the old)."""
    if not changes:
        return
    log.warning("resuming from %s with changed settings: %s", folder,
                ", ".join(f"{k} {json.dumps(a)} -> {json.dumps(b)}" for k, (a, b) in changes.items()))
    row = {"step": step, "checkpoint": str(folder), "changes": {k: [a, b] for k, (a, b) in changes.items()}}
    with open(Path(output_dir) / CHANGES_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _lookup(data: Any, key: str) -> Any:
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node
