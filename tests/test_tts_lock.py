"""Kokoro's model is assembled by one process at a time (parallel synth workers raced on it)."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path


def _assemble(args: tuple[str, str]) -> bool:
    inside, seen_other = map(Path, args)
    from speechllm.data.tts.kokoro import _assembled_model

    def fake_model_path() -> Path:
        if inside.exists():  # another process is assembling right now
            seen_other.touch()
        inside.touch()
        time.sleep(0.3)
        inside.unlink()
        return inside.with_suffix(".onnx")

    return _assembled_model(fake_model_path) == inside.with_suffix(".onnx")


def test_model_assembly_is_serialised_across_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHLLM_HOME", str(tmp_path / "home"))
    args = (str(tmp_path / "inside"), str(tmp_path / "overlap"))
    with mp.get_context("fork").Pool(3) as pool:
        assert pool.map(_assemble, [args] * 3) == [True, True, True]
    assert not (tmp_path / "overlap").exists()
    assert os.path.exists(tmp_path / "home")  # the lock lives in speechllm's cache
