"""Recipes: every shipped config loads; the stage script's options and errors; the offline mini
recipe end to end through the real CLI at CI size (real Whisper tiny.en and SmolLM2)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from speechllm.config import RunConfig, load_config

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_loads(path):
    cfg = load_config(RunConfig, path)
    header = path.read_text().splitlines()[0]
    assert header.startswith("#"), "each recipe starts with a comment giving the exact command"
    assert "speechllm" in path.read_text().split("\nmodel:")[0]
    assert cfg.model.adapter in ("qformer", "mlp")


def test_recipe_facts_follow_desta2():
    d2 = load_config(RunConfig, REPO / "recipes/desta2_whisper-small_llama3-8b-instruct.yaml")
    assert d2.model.encoder_layers == [2, 5, 8, 11] and d2.model.qformer_layers == 2
    assert (d2.train.lr, d2.train.betas, d2.train.weight_decay) == (1e-4, [0.9, 0.98], 0.01)
    assert (d2.train.warmup_steps, d2.train.epochs, d2.train.batch_size) == (2000, 10, 8)
    d25 = load_config(RunConfig, REPO / "recipes/desta25_whisper-large-v3_llama3.1-8b-instruct.yaml")
    assert d25.model.encoder_layers == [7, 15, 23, 31] and d25.model.qformer_layers == 6
    assert (d25.train.warmup_steps, d25.train.epochs, d25.train.batch_size) == (5000, 5, 12)
    # The papers' Q-Former reads whole padded windows of raw hidden states; the framework's
    # defaults (real frames only, global frame normalisation) must not leak into these recipes.
    for path in REPO.glob("recipes/desta2*.yaml"):
        m = load_config(RunConfig, path).model
        assert (m.qformer_context, m.frame_norm) == ("window", "none"), path.name


def test_accelerate_configs_parse():
    files = sorted((REPO / "recipes" / "accelerate").glob("*.yaml"))
    assert len(files) >= 3  # single_device, multi_gpu_ddp, fsdp (zero2 removed: DeepSpeed is not run)
    for f in files:
        assert isinstance(yaml.safe_load(f.read_text()), dict), f


def _stages(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "egs/TEMPLATE/stages.sh"), *args], cwd=cwd,
                          capture_output=True, text=True, env=env)


def test_stage_script_help_and_bad_options():
    out = _stages("--help")
    assert out.returncode == 0
    for option in ("--stage", "--stop_stage", "--launcher", "--corpus_dir", "--force"):
        assert option in out.stdout
    bad = _stages("--corpus", "x", "--config", "recipes/mini_offline_cpu.yaml", "--nope", "1")
    assert bad.returncode != 0 and "unknown option --nope" in bad.stderr
    stage = _stages("--corpus", "x", "--config", "recipes/mini_offline_cpu.yaml", "--stage", "fly")
    assert stage.returncode != 0 and "unknown stage 'fly'" in stage.stderr


def test_missing_inputs_name_the_earlier_stage(tmp_path):
    out = _stages("--corpus", "x", "--config", "recipes/mini_offline_cpu.yaml", "--dump", str(tmp_path / "d"),
                  "--exp", str(tmp_path / "e"), "--stage", "train", "--stop_stage", "train")
    assert out.returncode != 0
    assert "run stage 3 (generate) first" in out.stderr
    missing = _stages("--corpus", "vctk", "--config", "recipes/mini_offline_cpu.yaml", "--dump", str(tmp_path / "d"),
                      "--corpus_dir", str(tmp_path / "no-such-corpus"), "--stage", "1", "--stop_stage", "1")
    assert missing.returncode != 0 and "no-such-corpus does not exist" in missing.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_mini_recipe_end_to_end_at_ci_size(tmp_path, offline_whisper_tiny_en, offline_smollm2):
    """The README's main job, shrunk: synth -> describe -> generate -> cache -> train -> infer -> eval."""
    if shutil.which("flite") is None or shutil.which("espeak-ng") is None:
        pytest.skip("flite / espeak-ng not installed (scripts/install.sh installs them)")
    dump, exp = tmp_path / "dump", tmp_path / "exp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable}
    args = ["bash", str(REPO / "egs/mini/run.sh"), "--skip_install", "true", "--synth_num", "30", "--num_threads", "1",
            "--dump", str(dump), "--exp", str(exp), "--gen_max_new_tokens", "24", "--infer_clips", "",
            "--infer_limit", "2", "--eval_limit", "6", "--overrides", "train.max_steps=3 train.batch_size=4"]
    run = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    train_rows = [json.loads(x) for x in (dump / "data" / "train.jsonl").read_text().splitlines()]
    targets = [json.loads(x) for x in (dump / "targets" / "train.jsonl").read_text().splitlines()]
    # The corpus mixes natural voices, robotic ones and non-speech (egs/mini/local/mix.sh).
    assert {r["attributes"].get("tts_engine", "none") for r in train_rows} >= {"kokoro", "none"}
    # Faithful targets only (egs/synthetic/local/faithful_targets.py): every kept target is a
    # training row's, or a further target of a non-speech row (ID-c2 .. ID-cK, K from run.sh's
    # --nonspeech-copies), and says nothing against its labels; the ones left out are listed
    # with their reason.
    copies = int(re.search(r"--nonspeech-copies (\d+)", (REPO / "egs/mini/run.sh").read_text()).group(1))
    nonspeech = {r["id"] for r in train_rows if r["attributes"].get("contains_speech") is False}
    allowed = {r["id"] for r in train_rows} | {f"{i}-c{k}" for i in nonspeech for k in range(2, copies + 1)}
    assert targets and {t["id"] for t in targets} <= allowed
    from speechllm.generate.faithful import unfaithful_reason
    assert all(unfaithful_reason(t, require_no_speaker=True) is None for t in targets)
    report = json.loads((dump / "targets" / "train.faithful.json").read_text())
    assert report["kept"] == len(targets) and report["rows"] == len(train_rows) + (copies - 1) * len(nonspeech)
    assert all(t["description"].startswith("[00:00:00 - ") and t["response"].strip() for t in targets)
    assert (dump / "targets" / "train.faithfulness.json").is_file()
    assert (exp / "train" / "final" / "adapter.safetensors").is_file()
    replies = [json.loads(x) for x in (exp / "infer" / "test.jsonl").read_text().splitlines()]
    assert len(replies) == 2 and all("response" in r for r in replies)
    report = json.loads((exp / "eval" / "report.json").read_text())
    text = json.dumps(report)
    # The CI-size test split is 3 rows, all male: the built-in benchmark asks no gender item then.
    assert "accent" in text and "kl_to_base" in text
    assert (exp / "eval" / "report.md").is_file()

    again = subprocess.run(args + ["--stage", "1", "--stop_stage", "3"], cwd=REPO, capture_output=True,
                           text=True, env=env, timeout=300)
    assert again.returncode == 0
    for n in (1, 2, 3):
        assert f"stage {n} (" in again.stdout and "already done" in again.stdout

    # --force redoes a finished stage from scratch: generate's resume would otherwise keep the
    # old targets (and refuses to mix settings), so the old output is removed first.
    forced = subprocess.run(args + ["--stage", "generate", "--stop_stage", "generate", "--force", "true",
                                    "--prompt_pool", "builtin:attributes"],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert forced.returncode == 0, forced.stdout[-2000:] + forced.stderr[-2000:]
    assert "--force: removing" in forced.stdout
    redone = [json.loads(x) for x in (dump / "targets" / "train.jsonl").read_text().splitlines()]
    assert redone and {t["id"] for t in redone} <= allowed
    assert {t["generator"]["prompt_pool"] for t in redone} == {"builtin:attributes"}
