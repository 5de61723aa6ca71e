"""The egs launcher's multi-node and sharded commands (``egs/TEMPLATE/stages.sh``), without a
cluster: fake ``srun``/``scontrol``/``sbatch`` and a fake Python record what they are given."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = "recipes/mini_offline_cpu.yaml"

FAKES = {
    # One task per node, as `srun --nodes=N --ntasks-per-node=1` starts them: SLURM_NODEID set.
    "srun": """#!/usr/bin/env bash
echo "srun $*" >> "$FAKE_LOG"
nodes=1
while [ $# -gt 0 ] && [[ $1 == -* ]]; do [[ $1 == --nodes=* ]] && nodes=${1#--nodes=}; shift; done
for ((n = 0; n < nodes; n++)); do SLURM_NODEID=$n "$@"; done
mkdir -p "$FAKE_FINAL"
""",
    "scontrol": """#!/usr/bin/env bash
[ "$1 $2" = "show hostnames" ] && [ "$3" = "$SLURM_JOB_NODELIST" ] && printf 'gpu-a01\\ngpu-a02\\n'
""",
    "python": """#!/usr/bin/env bash
echo "node $SLURM_NODEID MASTER_ADDR=$MASTER_ADDR: python $*" >> "$FAKE_LOG"
""",
}


def _fake_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _stages(tmp_path: Path, *args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    bin_dir = _fake_bin(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHON=str(bin_dir / "python"), FAKE_LOG=str(tmp_path / "log"),
               **env_extra)
    dump = tmp_path / "dump"
    for d, names in (("data", ("train", "dev", "test")), ("described", ("train", "dev")), ("targets", ("train", "dev"))):
        (dump / d).mkdir(parents=True, exist_ok=True)
        for n in names:
            (dump / d / f"{n}.jsonl").write_text("")
    return subprocess.run(["bash", str(REPO / "egs/TEMPLATE/stages.sh"), "--corpus", "x", "--config", RECIPE,
                           "--dump", str(dump), "--exp", str(tmp_path / "exp"), *args],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=60)


def test_slurm_training_runs_one_torchrun_per_node_at_one_rendezvous(tmp_path):
    run = _stages(tmp_path, "--stage", "train", "--stop_stage", "train", "--launcher", "slurm", "--num_nodes", "2",
                  "--num_gpus", "8", "--engine", "fsdp2", "--slurm_opts", "--partition=gpu",
                  env_extra={"SLURM_JOB_NODELIST": "gpu-a[01-02]", "SLURM_JOB_ID": "4242",
                             "FAKE_FINAL": str(tmp_path / "exp" / "train" / "final")})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    log = (tmp_path / "log").read_text().splitlines()
    assert log[0].startswith("srun --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 --partition=gpu bash -c ")
    torchruns = log[1:]
    assert len(torchruns) == 2
    for node, line in enumerate(torchruns):
        assert line.startswith(f"node {node} MASTER_ADDR=gpu-a01: python -m torch.distributed.run --nnodes=2 "
                               "--nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=gpu-a01:29500 "
                               "--rdzv_id=4242 -m speechllm.cli train --config "), line
        assert line.endswith(f"train.output_dir={tmp_path}/exp/train train.engine=fsdp2"), line
        assert "--resume auto" in line and f"data.feature_cache={tmp_path}/dump/features" in line


def test_accelerate_launcher_refuses_several_nodes(tmp_path):
    run = _stages(tmp_path, "--stage", "train", "--stop_stage", "train", "--launcher", "accelerate",
                  "--num_nodes", "2", env_extra={})
    assert run.returncode != 0 and "--launcher slurm" in run.stderr


def test_sharded_stages_are_slurm_array_jobs_followed_by_their_merge(tmp_path):
    run = _stages(tmp_path, "--stage", "describe", "--stop_stage", "cache", "--launcher", "slurm", "--shards", "4",
                  "--slurm_opts", "--gpus=1", "--dry_run", "true", env_extra={})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    commands = [line for line in run.stdout.splitlines() if line.startswith("+ ")]
    dump = f"{tmp_path}/dump"
    arrays = [c for c in commands if c.startswith("+ sbatch --wait --array=0-3 ")]
    # describe: train, dev, test; generate: train, dev; cache: once.
    assert [c.split("--job-name=")[1].split()[0] for c in arrays] == (
        ["speechllm-describe"] * 3 + ["speechllm-generate"] * 2 + ["speechllm-cache-features"])
    for c in arrays:
        assert " --gpus=1 --wrap " in c and r"\$SLURM_ARRAY_TASK_ID" in c
    assert r"--shard \$SLURM_ARRAY_TASK_ID/4" in arrays[0].replace("\\ ", " ")
    assert r"described/train.\$SLURM_ARRAY_TASK_ID.jsonl" in arrays[0]
    assert f"+ concat_shards {dump}/described/train.jsonl" in commands
    merge = next(c for c in commands if c.startswith("+ speechllm generate merge"))
    assert merge == (f"+ speechllm generate merge {dump}/targets/train.0.jsonl {dump}/targets/train.1.jsonl "
                     f"{dump}/targets/train.2.jsonl {dump}/targets/train.3.jsonl --output {dump}/targets/train.jsonl "
                     f"--expect {dump}/described/train.jsonl")
    assert any(c.startswith("+ speechllm cache-features") and " --merge " in c for c in commands)
    assert not list((tmp_path / "dump").glob(".done.*"))  # a dry run marks nothing done


def test_local_shards_run_one_after_another_and_merge(tmp_path):
    """Without SLURM the shards run in turn; concat_shards joins describe's outputs and side files."""
    run = _stages(tmp_path, "--stage", "describe", "--stop_stage", "describe", "--shards", "2", "--splits", "train",
                  "--dry_run", "true", env_extra={})
    assert run.returncode == 0, run.stderr[-2000:]
    commands = [line for line in run.stdout.splitlines() if line.startswith("+ ")]
    dump = f"{tmp_path}/dump"
    assert [c.split()[4:7] for c in commands[:2]] == [
        [f"{dump}/described/train.0.jsonl", "--shard", "0/2"], [f"{dump}/described/train.1.jsonl", "--shard", "1/2"]]
    # The merge itself (not a dry run of it): two shard files and their skipped rows.
    described = tmp_path / "dump" / "described"
    for i in range(2):
        (described / f"train.{i}.jsonl").write_text(f'{{"id": "r{i}"}}\n')
        (described / f"train.{i}.jsonl.skipped.jsonl").write_text(f'{{"id": "bad{i}"}}\n')
    script = (f'set -euo pipefail; shards=2; eval "$(sed -n "/^concat_shards()/,/^}}/p" {REPO}/egs/TEMPLATE/stages.sh)"; '
              f"concat_shards {described}/train.jsonl")
    subprocess.run(["bash", "-c", script], check=True, timeout=30)
    assert (described / "train.jsonl").read_text() == '{"id": "r0"}\n{"id": "r1"}\n'
    assert (described / "train.jsonl.skipped.jsonl").read_text() == '{"id": "bad0"}\n{"id": "bad1"}\n'
