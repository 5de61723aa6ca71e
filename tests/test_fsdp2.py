"""FSDP2 (``train.engine: fsdp2``) through the real launchers, on CPU with gloo and two processes:
``accelerate launch --config_file recipes/accelerate/fsdp.yaml`` and ``torchrun``.

One module fixture runs the launches once (about 10 s each on an idle 2-core machine): a torchrun
FSDP2 run (``train.engine=fsdp2``) killed with SIGKILL after its step-2 checkpoint and resumed with
``--resume auto`` through accelerate's FSDP config (so the finished run folder, its
``environment.json`` and checkpoint are that launcher's), a torchrun DDP run, a one-process
run with the doubled batch, then a 2-step torchrun FSDP2 run and a one-process run that start
from the first run's checkpoint (``train.init_from``). The resumed run's losses (the steps before the checkpoint logged by the
killed run, the rest by the resumed one) must equal the uninterrupted runs'. The data holds bad rows (missing
audio) placed so that one rank's micro-batch loses every row: under FSDP2 that rank must still run
every sharded forward, or the other rank waits forever (the launches run under a timeout). The
runs train LoRA inside the sharded layers as well as the adapter, with the KL objective (a second,
teacher forward per micro-batch), DiVA, and replay rows with KL to the base model (a base forward
that only the rank holding replay rows needs). Under FSDP2 only rank 0 reads the LLM; rank 1 builds it on the
meta device and receives its shards and buffers (rotary ``inv_freq``) from rank 0, so the loss
equalities below also check that path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from train_fixtures import tiny_run_config, write_replay, write_rows

from speechllm.testing.net import free_port

REPO = Path(__file__).resolve().parents[1]
GOOD, BAD, STEPS = 8, 4, 8
INIT_STEPS = 2
REPLAY, REPLAY_RATIO = 6, 0.25  # one replay row in every other micro-batch of 2, in every batch of 4
LAUNCH_TIMEOUT = 300  # a hang (a rank sitting out a sharded forward) fails here, not forever


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _accelerate(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(REPO / "recipes" / "accelerate" / "fsdp.yaml"), "--num_processes", "2",
            "--main_process_port", str(free_port()), "-m", "speechllm.cli", "train", "--config", str(config), *args]


def _torchrun(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
            str(free_port()), "-m", "speechllm.cli", "train", "--config", str(config), *args]


def _kill_tree(pid: int) -> None:
    """SIGKILL a launcher and every process under it. torchrun starts each worker in a session of
    its own, so killing the launcher's process group leaves the workers training on (and writing
    into the run folder the resumed run uses)."""
    import psutil  # accelerate's dependency

    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs[1:], timeout=30)


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env(), timeout=LAUNCH_TIMEOUT)
    assert proc.returncode == 0, log.read_text()[-3000:]


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def _seed_with_an_all_bad_micro_batch() -> int:
    """A sampler seed whose first epoch gives one rank (batch 2, 2 ranks) a micro-batch of bad
    rows only (rows GOOD..GOOD+BAD are bad; replay rows come after them), while no doubled batch
    of the one-process run is all bad."""
    from speechllm.train.sampler import BucketingBatchSampler

    replay = range(GOOD + BAD, GOOD + BAD + REPLAY)
    for seed in range(100):
        plan = BucketingBatchSampler([1.0] * (GOOD + BAD), batch_size=2, seed=seed, bucket_by_length=False,
                                     replay=replay, replay_ratio=REPLAY_RATIO, world_size=2).global_plan(0)
        halves = [all(GOOD <= i < GOOD + BAD for i in b) for b in plan]
        doubled = [halves[k] and halves[k + 1] for k in range(0, len(plan) - 1, 2)]
        if any(halves) and not any(doubled):
            return seed
    raise AssertionError("no seed puts only bad rows in one rank's micro-batch")


def _same_maths(cfg, replay: Path) -> None:
    cfg.model.adapter_dropout = 0.0
    cfg.data.bucket_by_length = False  # plain chunks: 2 ranks x 2 rows == 1 process x 4 rows
    lora = cfg.model.lora
    lora.enabled, lora.r, lora.dropout = True, 4, 0.0  # LoRA lives inside the sharded layers
    # DiVA too: its audio-vector alignment reads the sharded embedding outside the LLM forward.
    cfg.train.objectives, cfg.train.diva_num_align = {"ce": 1.0, "kl": 0.5, "diva": 0.1}, 2
    # Replay rows with KL to the base model (a base forward that only some ranks' rows need).
    cfg.data.replay, cfg.data.replay_ratio, cfg.train.replay_kl_weight = [str(replay)], REPLAY_RATIO, 0.5


@pytest.fixture(scope="module")
def runs(tiny_llm_dir, tiny_whisper_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp2")
    train_file = write_rows(root / "data", GOOD, bad=BAD)
    replay = write_replay(root / "data", REPLAY)
    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [train_file], root / "unused", max_steps=STEPS,
                          batch_size=2, seed=_seed_with_an_all_bad_micro_batch())
    _same_maths(cfg, replay)
    from speechllm.config import save_resolved_config

    config = save_resolved_config(cfg, root)
    out = {"root": root, "config": config}

    # SIGKILL torchrun and its workers once a checkpoint exists and before the run ends, then resume.
    killed = out["fsdp"] = root / "fsdp"
    cmd = _torchrun(config, "train.engine=fsdp2", f"train.output_dir={killed}", "train.save_every=2")
    with open(root / "killed.log", "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while not (killed / "checkpoints" / "step-00000002").is_dir():
            assert proc.poll() is None and time.monotonic() < deadline, (root / "killed.log").read_text()[-3000:]
            time.sleep(0.01)
        _kill_tree(proc.pid)
        proc.wait()
    out["killed_at"] = len((killed / "metrics.jsonl").read_text().splitlines())
    out["killed_finished"] = (killed / "final").exists()
    _run(_accelerate(config, f"train.output_dir={killed}", "train.save_every=2", "--resume", "auto"),
         root / "resumed.log")

    out["ddp"] = root / "ddp"
    _run(_torchrun(config, f"train.output_dir={out['ddp']}"), root / "ddp.log")

    from speechllm.train import train

    single_cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [train_file], root / "single", max_steps=STEPS,
                                 batch_size=4, seed=cfg.train.seed)
    _same_maths(single_cfg, replay)
    train(single_cfg)
    out["single"] = root / "single"

    # Training that starts from the FSDP2 run's checkpoint (train.init_from: LoRA and adapter
    # loaded), under FSDP2 and in one process with the doubled batch.
    out["init"] = root / "init"
    _run(_torchrun(config, "train.engine=fsdp2", f"train.output_dir={out['init']}", f"train.init_from={killed / 'final'}",
                   f"train.max_steps={INIT_STEPS}"), root / "init.log")
    single_cfg.train.init_from, single_cfg.train.max_steps = str(killed / "final"), INIT_STEPS
    single_cfg.train.output_dir = str(root / "single_init")
    train(single_cfg)
    out["single_init"] = root / "single_init"
    return out


def test_fsdp2_run_shards_the_llm_and_records_it(runs):
    env = json.loads((runs["fsdp"] / "environment.json").read_text())
    assert env["engine"] == "fsdp2" and env["world_size"] == 2
    total = env["llm_parameter_bytes_total"]
    assert len(env["llm_parameter_bytes_per_rank"]) == 2
    for local in env["llm_parameter_bytes_per_rank"]:
        assert 0 < local <= 0.6 * total
    # Every frozen byte lies on some rank; the trained LoRA weights (a few kB) on every rank.
    assert total <= sum(env["llm_parameter_bytes_per_rank"]) <= 1.1 * total
    ddp = json.loads((runs["ddp"] / "environment.json").read_text())
    assert ddp["engine"] == "ddp" and ddp["llm_parameter_bytes_per_rank"] == [total, total]
    # Only rank 0 read the LLM: rank 1 built it (and its LoRA) on the meta device and received its
    # shards (train.fsdp_rank0_load); its losses are checked by the tests below. DDP loads it twice.
    assert env["llm_parameter_bytes_loaded_per_rank"] == [total, 0]
    assert ddp["llm_parameter_bytes_loaded_per_rank"] == [total, total]
    assert len(env["setup_peak_memory_mb_per_rank"]) == 2


def test_fsdp2_losses_equal_the_doubled_batch_and_ddp(runs):
    fsdp, single, ddp = _losses(runs["fsdp"]), _losses(runs["single"]), _losses(runs["ddp"])
    assert len(fsdp) == len(single) == len(ddp) == STEPS
    for a, b, c in zip(fsdp, single, ddp):
        assert abs(a - b) <= 1e-5 and abs(a - c) <= 1e-5, (fsdp, single, ddp)
    # DiVA and replay KL-to-base took part (the latter once LoRA has moved away from the base).
    records = [json.loads(x) for x in (runs["fsdp"] / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_diva"] > 0 for r in records) and all(r["loss_replay_kl"] > 0 for r in records[1:])
    # The bad rows were skipped, and counted alike: the rank that lost a whole micro-batch trained
    # nothing from its stand-in row.
    skipped = [json.loads((runs[k] / "summary.json").read_text())["skipped"] for k in ("fsdp", "single")]
    assert skipped[0] == skipped[1] and skipped[0].get("missing", 0) >= 2


def test_fsdp2_init_from_a_checkpoint_loads_on_rank_0_only(runs):
    env = json.loads((runs["init"] / "environment.json").read_text())
    total = env["llm_parameter_bytes_total"]
    assert env["engine"] == "fsdp2" and env["llm_parameter_bytes_loaded_per_rank"] == [total, 0]
    init, single = _losses(runs["init"]), _losses(runs["single_init"])
    assert len(init) == len(single) == INIT_STEPS
    for a, b in zip(init, single):
        assert abs(a - b) <= 1e-5, (init, single)
    # It started from the trained weights, not from fresh ones.
    assert abs(init[0] - _losses(runs["single"])[0]) > 1e-3


def test_fsdp2_sigkill_and_resume_auto_reproduce_the_losses(runs):
    assert not runs["killed_finished"] and 2 <= runs["killed_at"] < STEPS
    resumed = _losses(runs["fsdp"])
    assert len(resumed) == STEPS  # the killed run's steps after its checkpoint were dropped, then re-run
    for a, b in zip(resumed, _losses(runs["single"])):
        assert abs(a - b) <= 1e-5
    assert "resumed from" in (runs["root"] / "resumed.log").read_text()


def test_fsdp2_checkpoint_loads_in_one_process_and_infers(runs):
    import torch
    from safetensors.torch import load_file

    from speechllm.models import SpeechLLM
    from speechllm.models.checkpoint import ADAPTER_FILE

    final = runs["fsdp"] / "final"
    # Only the trained weights: the adapter and LoRA (no LLM or encoder tensor in the checkpoint).
    assert sorted(str(p.relative_to(final)) for p in final.rglob("*.safetensors")) == [
        ADAPTER_FILE, "lora/adapter_model.safetensors"]
    lora = load_file(str(final / "lora" / "adapter_model.safetensors"))
    assert lora and all("lora_" in k for k in lora)
    single_lora = load_file(str(runs["single"] / "final" / "lora" / "adapter_model.safetensors"))
    for k, v in lora.items():
        assert torch.allclose(v, single_lora[k], atol=1e-5, rtol=1e-4), k
    model = SpeechLLM.from_pretrained(final, device="cpu", dtype="fp32")
    single = load_file(str(runs["single"] / "final" / ADAPTER_FILE))
    for k, v in model.adapter.state_dict().items():
        assert torch.allclose(v, single[k], atol=1e-5, rtol=1e-4), k
    import soundfile as sf

    wave, _ = sf.read(runs["root"] / "data" / "utt0.wav", dtype="float32")
    text = model.generate([{"role": "user", "content": "<|AUDIO|>\nWhat can you hear?"}], [wave],
                          max_new_tokens=4)
    assert isinstance(text, str)


def _accelerate_env(config_file: Path) -> dict[str, str]:
    """The environment ``accelerate launch --config_file F`` gives its processes, from
    accelerate's own launch code (no process started)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env, prepare_simple_launcher_cmd_env

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "--num_processes", "2", "x.py"])
    args, _, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        return {"ACCELERATE_USE_DEEPSPEED": "true"}  # what accelerate's DeepSpeed launcher sets
    if args.use_fsdp or args.multi_gpu:
        return prepare_multi_gpu_env(args)
    return prepare_simple_launcher_cmd_env(args)[1]


@pytest.mark.parametrize("config_file", sorted((REPO / "recipes" / "accelerate").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_accelerate_config_names_an_engine_the_trainer_runs(config_file, monkeypatch):
    from speechllm.train.distributed import resolve_engine

    for k in list(os.environ):
        if k.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.delenv(k)
    env = _accelerate_env(config_file)
    for k, v in env.items():
        if k.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(k, v)
    declared = yaml.safe_load(config_file.read_text())["distributed_type"]
    expected = {"FSDP": "fsdp2", "MULTI_GPU": "ddp", "NO": "ddp"}
    assert declared in expected, f"{config_file.name}: distributed_type {declared} has no engine in the trainer"
    assert resolve_engine("auto", 2) == expected[declared]


def test_resolve_engine_refuses_what_it_does_not_run(monkeypatch):
    from speechllm.errors import ConfigError
    from speechllm.train.distributed import resolve_engine

    for k in list(os.environ):
        if k.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.delenv(k)
    assert resolve_engine("auto", 1) == "single" and resolve_engine("fsdp2", 2) == "fsdp2"
    assert resolve_engine("auto", 2) == "ddp"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ConfigError, match="FSDP version 1"):
        resolve_engine("auto", 2)
    monkeypatch.setenv("FSDP_VERSION", "2")
    with pytest.raises(ConfigError, match="train.engine=ddp but the launch config names fsdp2"):
        resolve_engine("ddp", 2)
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match="DeepSpeed"):
        resolve_engine("auto", 2)
