"""``cache-features --shard i/N`` into one folder, the shared index, ``--merge`` and ``--device``."""

from __future__ import annotations

import json

import pytest
import torch
from train_fixtures import tiny_run_config, write_rows


@pytest.fixture(scope="module")
def setup(tiny_llm_dir, tiny_whisper_dir, tmp_path_factory):
    from speechllm.config import save_resolved_config
    from speechllm.models import SpeechLLM

    root = tmp_path_factory.mktemp("cache_shards")
    train = write_rows(root / "data", 8, bad=1)
    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [train], root / "run")
    model = SpeechLLM.from_config(cfg.model, device="cpu", dtype="fp32")
    return {"root": root, "train": train, "model": model, "config": save_resolved_config(cfg, root)}


def _tensors(folder, index):
    from safetensors import safe_open

    out = {}
    for rid, e in index.items():
        if "shard" in e:
            with safe_open(str(folder / e["shard"]), framework="pt") as f:
                out[rid] = [f.get_tensor(f"{rid}/{j}") for j in range(e["taps"])]
    return out


def test_shards_build_disjoint_parts_that_equal_one_build(setup, tmp_path):
    from speechllm.train.feature_cache import FeatureCache, build_cache, merge_shards, read_index
    from speechllm.utils.jsonl import shard_of

    model, files = setup["model"], [str(setup["train"])]
    whole = build_cache(model, files, tmp_path / "whole", batch_size=3, progress=False)
    parts = [build_cache(model, files, tmp_path / "sharded", batch_size=3, progress=False, shard=(i, 2))
             for i in range(2)]
    assert sum(p["cached"] for p in parts) == whole["cached"] == 8
    assert sum(p.get("missing", 0) for p in parts) == whole["missing"] == 1
    folder = tmp_path / "sharded"
    key_hash = json.loads((folder / "cache_key.json").read_text())["hash"]
    assert not (folder / "index.json").exists()
    for i in range(2):  # each shard holds exactly its ids
        own = json.loads((folder / f"index.{key_hash}.shard-{i}-of-2.json").read_text())
        assert own and all(shard_of(rid, 2) == i for rid in own)
    # A re-run of a finished shard encodes nothing (resumable per shard).
    assert build_cache(model, files, folder, progress=False, shard=(1, 2))["cached"] == 0
    # Training reads the shards' shared index before any merge, and the features equal one build's.
    cache = FeatureCache.open_for(folder, model)
    whole_index = json.loads((tmp_path / "whole" / "index.json").read_text())
    assert cache.index.keys() == whole_index.keys()
    a, b = _tensors(folder, cache.index), _tensors(tmp_path / "whole", whole_index)
    assert a.keys() == b.keys() and len(a) == 8
    for rid in a:
        assert all(torch.equal(x, y) for x, y in zip(a[rid], b[rid])), rid
    counts = merge_shards(folder, files)
    assert counts == {"entries": 9, "errors": 1, "shard_indexes": 2, "missing": 0}
    assert json.loads((folder / "index.json").read_text()) == read_index(folder, key_hash) == cache.index
    assert not list(folder.glob("index.*.shard-*.json"))


def test_a_shard_after_a_key_change_removes_only_the_old_keys_files(setup, tmp_path):
    from speechllm.train.feature_cache import build_cache

    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "cache_key.json").write_text(json.dumps({"hash": "0123456789abcdef"}))
    for name in ("index.json", "index.0123456789abcdef.shard-0-of-2.json", "shard-00000.safetensors"):
        (folder / name).write_text("{}")
    build_cache(setup["model"], [str(setup["train"])], folder, progress=False, shard=(0, 2))
    names = sorted(p.name for p in folder.iterdir())
    assert "index.json" not in names and "shard-00000.safetensors" not in names
    assert not any("0123456789abcdef" in n for n in names)
    new_hash = json.loads((folder / "cache_key.json").read_text())["hash"]
    assert f"index.{new_hash}.shard-0-of-2.json" in names


def test_cli_merge_reports_missing_shards_and_device_cuda_without_a_gpu(setup, tmp_path, capsys):
    from speechllm.cli import main
    from speechllm.train.feature_cache import build_cache

    out = tmp_path / "c"
    build_cache(setup["model"], [str(setup["train"])], out, progress=False, shard=(0, 2))
    assert main(["cache-features", "--config", str(setup["config"]), "--out", str(out), "--merge"]) == 1
    said = capsys.readouterr().out
    assert "'missing': " in said and "re-run the shards" in said
    assert main(["cache-features", "--config", str(setup["config"]), "--out", str(out), "--shard", "1/2",
                 "--device", "cpu"]) == 0
    assert main(["cache-features", "--config", str(setup["config"]), "--out", str(out), "--merge"]) == 0
    if not torch.cuda.is_available():
        code = main(["cache-features", "--config", str(setup["config"]), "--out", str(out), "--device", "cuda"])
        assert code != 0 and "--device cuda: no CUDA device is visible" in capsys.readouterr().err


def test_a_second_build_of_one_folder_waits_for_the_first_then_finds_the_rows_cached(setup, tmp_path, caplog):
    """Two trainings started on one feature cache both extended it and wrote the same shard file
    through the same temporary name: one stopped with ENOENT. An unsharded build now holds the
    folder's lock; one that finds it held waits, then reads what the other cached."""
    import logging
    import threading

    from speechllm.train.feature_cache import BUILD_LOCK, FeatureCache, build_cache
    from speechllm.utils.fs import exclusive_lock

    caplog.set_level(logging.INFO, logger="speechllm.train.feature_cache")
    folder = tmp_path / "cache"
    folder.mkdir()
    files = [str(setup["train"])]
    results = {}
    with exclusive_lock(folder / BUILD_LOCK):  # another process's build, still running
        waiting = threading.Thread(
            target=lambda: results.update(second=build_cache(setup["model"], files, folder, progress=False)))
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive() and not list(folder.glob("shard-*")), "the build did not wait for the lock"
    waiting.join()
    assert "another process is building it; waiting" in caplog.text
    assert results["second"]["cached"] == 8  # and one row with missing audio, counted
    assert build_cache(setup["model"], files, folder, progress=False)["cached"] == 0
    cache = FeatureCache.open_for(folder, setup["model"])
    assert [cache.problem(f"utt{i}") for i in range(8)] == [None] * 8 and cache.problem("bad0") is not None
