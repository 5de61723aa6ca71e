"""benchmarks/desta25_peer.py: the offline hub-id alias that lets DeSTA2.5's code load a local folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "desta25_peer.py"


def _load():
    spec = importlib.util.spec_from_file_location("desta25_peer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hub_cache_alias_resolves_hub_id_to_folder(tmp_path):
    peer = _load()
    folder = tmp_path / "whisper"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "whisper"}')
    root = tmp_path / "hf"
    peer.hub_cache_alias(root, "openai/whisper-tiny", folder)
    peer.hub_cache_alias(root, "openai/whisper-tiny", folder)  # idempotent
    for cache in (root, root / "hub"):  # cache_dir=$HF_HOME (their code) and $HF_HOME/hub (the default)
        found = try_to_load_from_cache("openai/whisper-tiny", "config.json", cache_dir=cache)
        assert isinstance(found, str)
        assert Path(found).resolve() == (folder / "config.json").resolve()
        assert try_to_load_from_cache("openai/whisper-tiny", "model.safetensors", cache_dir=cache) is None
