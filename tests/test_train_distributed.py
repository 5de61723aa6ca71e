"""Two CPU processes (gloo) train to identical parameters on both ranks, equal to one process
with the doubled batch."""

from __future__ import annotations

import os

import torch
import torch.multiprocessing as mp
from train_fixtures import tiny_run_config, write_rows

from speechllm.testing.net import free_port


def _config(llm, whisper, train_file, out, batch_size):
    cfg = tiny_run_config(llm, whisper, [train_file], out, max_steps=3, batch_size=batch_size)
    cfg.model.adapter_dropout = 0.0
    cfg.data.bucket_by_length = False  # plain chunks: 2 ranks x 2 rows == 1 process x 4 rows
    return cfg


def _worker(rank, world, port, llm, whisper, train_file, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from speechllm.train import Trainer

    trainer = Trainer(_config(llm, whisper, train_file, out, batch_size=2))
    trainer.run()
    torch.save({k: v.detach().clone() for k, v in trainer.model.adapter.state_dict().items()},
               os.path.join(out, f"adapter-rank{rank}.pt"))
    torch.distributed.barrier()  # both ranks done with the group before either tears it down
    torch.distributed.destroy_process_group()


def test_two_gloo_ranks_match_each_other_and_the_doubled_batch(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    train_file = write_rows(tmp_path / "data", 8)
    out = tmp_path / "ddp"
    out.mkdir()
    mp.start_processes(_worker, args=(2, free_port(), str(tiny_llm_dir), str(tiny_whisper_dir), str(train_file),
                                      str(out)), nprocs=2, join=True, start_method="spawn")
    r0 = torch.load(out / "adapter-rank0.pt", weights_only=True)
    r1 = torch.load(out / "adapter-rank1.pt", weights_only=True)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k

    from speechllm.train import Trainer

    single = Trainer(_config(tiny_llm_dir, tiny_whisper_dir, train_file, tmp_path / "single", batch_size=4))
    single.run()
    for k, v in single.model.adapter.state_dict().items():
        assert torch.allclose(v, r0[k], atol=1e-5, rtol=1e-4), k
    # The per-step losses logged by rank 0 are global (both ranks' tokens): equal to the single run's.
    import json

    ddp_losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    one_losses = [json.loads(x)["loss"] for x in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    assert len(ddp_losses) == len(one_losses) == 3
    for a, b in zip(ddp_losses, one_losses):
        assert abs(a - b) < 1e-4
