"""Training step against a peer: DeSTA2.5's own model code vs speechllm's default step, same batch.

    OMP_NUM_THREADS=1 python benchmarks/desta25_peer.py --desta-clone /tmp/DeSTA2.5-Audio [--steps 3]

The project holds none of DeSTA2.5's code. ``--desta-clone`` is a local clone of
kehanlu/DeSTA2.5-Audio; its ``DeSTA25AudioModel`` (``desta/models/modeling_desta25.py``) is
imported from there by a small driver script that this script writes to a temporary file and
runs in a venv of its own (``~/.cache/speechllm/bench-venvs/desta25``, created on first use with
``torch==2.13.0``, ``transformers==4.53.3`` and what the model module imports: safetensors,
numpy, librosa, soundfile), because their code needs transformers 4.x.

Both sides get the same 8 clips (synthetic 1-5 s, ``train_throughput.py``'s data) and the same
token sequences: ours laid out by speechllm's chat layout (SmolLM2 chat template, 64 audio
vectors + the manifest transcript, the answer as labels), handed to their ``forward`` as
``input_ids`` with placeholders where the audio span stands, ``batch_start_positions`` and
``batch_transcription_ids``, as their collate builds them. Models, all offline:

- theirs: ``DeSTA25Config(llm_model_id=<offline SmolLM2-135M-Instruct folder>,
  encoder_model_id="openai/whisper-tiny", prompt_size=64, qformer_num_hidden_layers=2)``. Their
  connector accepts only four hub ids (it picks the tapped layers from the id), so the offline
  Whisper tiny.en folder is served under the id ``openai/whisper-tiny`` (same shape: 4 blocks,
  d_model 384) from a temporary Hugging Face cache of symlinks, with ``HF_HUB_OFFLINE=1``; their
  module is not patched. Their step as their Lightning trainer runs it (``bf16-mixed``): bf16
  autocast, LLM loaded in bf16 by their code, Whisper in fp32, full Whisper encoder on 30 s-padded
  mel every step, HF's full-vocabulary loss, backward, clip 1.0, AdamW (lr 1e-4, betas 0.9/0.98,
  wd 0.01). Log-mel features are computed once outside the timed step (their data loader's job).
- ours: ``speechllm.train.Trainer`` with its defaults on the same 8 rows (batch size 8, so every
  step is this batch; the encoder feature cache is built once, before timing).

Each side: one thread, one warm-up step, then ``--steps`` timed steps. Their side runs in its
own process (its peak resident memory is its own); ours runs in this process, ``--steps`` timed
steps right before theirs and ``--steps`` right after (on a shared machine the load then brackets
theirs), and its figure is the mean of both. Prints
samples per CPU second (CPU seconds of that process: other load on a shared machine does not
count), wall seconds per step, the ratio, peak RSS and the machine line (``machine.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe_machine, peak_rss_mib  # noqa: E402

VENV_PACKAGES = ("torch==2.13.0", "transformers==4.53.3", "safetensors", "numpy", "librosa", "soundfile")
DEFAULT_VENV = Path.home() / ".cache" / "speechllm" / "bench-venvs" / "desta25"
ENCODER_HUB_ID = "openai/whisper-tiny"  # one of the four ids their QformerConnector accepts
PROMPT_SIZE = 64  # their prompt_size; our Q-Former's num_queries per window
FAKE_COMMIT = "0" * 40  # the revision the local cache alias names

# Run in the peer venv: imports THEIR model class from the clone; everything else is ours.
DRIVER = r'''
import json, os, resource, sys, time
import torch
torch.set_num_threads(1)
clone, batch_file, whisper_dir, llm_dir, qformer_layers, steps = sys.argv[1:7]
sys.path.insert(0, clone)
from desta.models.modeling_desta25 import DeSTA25AudioModel, DeSTA25Config
import transformers
from transformers import WhisperFeatureExtractor

b = torch.load(batch_file, weights_only=True)
torch.manual_seed(0)
config = DeSTA25Config(llm_model_id=llm_dir, encoder_model_id=b["encoder_hub_id"],
                       connector_mode="qformer_1", qformer_num_hidden_layers=int(qformer_layers),
                       prompt_size=b["prompt_size"], use_lora=False)
model = DeSTA25AudioModel(config)
model.train()
fe = WhisperFeatureExtractor.from_pretrained(whisper_dir)
mel = fe([w.numpy() for w in b["waves"]], sampling_rate=16000, return_tensors="pt").input_features
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98), weight_decay=0.01)
starts = [tuple(int(v) for v in s) for s in b["start_positions"].tolist()]

def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], batch_features=mel,
                    batch_transcription_ids=[t[None] for t in b["transcripts"]],
                    batch_start_positions=starts, labels=b["labels"])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(out.loss.detach())

step()  # warm-up
cpu0, wall0 = time.process_time(), time.perf_counter()
losses = [step() for _ in range(int(steps))]
cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
print("RESULT " + json.dumps({
    "cpu_s": cpu, "wall_s": wall, "losses": losses, "transformers": transformers.__version__,
    "torch": torch.__version__, "threads": torch.get_num_threads(),
    "taps": list(model.perception.connector.config.target_layer_ids),
    "trainable": sum(p.numel() for p in params),
    "llm_dtype": str(next(model.llm_model.parameters()).dtype),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def hub_cache_alias(root: Path, hub_id: str, folder: Path) -> None:
    """Make ``from_pretrained(hub_id)`` resolve offline to ``folder``: a Hugging Face cache entry
    (``models--org--name/refs/main`` + a snapshot of symlinks) under ``root`` and ``root/hub``
    (their code passes ``cache_dir=$HF_HOME``; ``AutoConfig`` without it reads ``$HF_HOME/hub``)."""
    for base in (root, root / "hub"):
        entry = base / ("models--" + hub_id.replace("/", "--"))
        snap = entry / "snapshots" / FAKE_COMMIT
        snap.mkdir(parents=True, exist_ok=True)
        (entry / "refs").mkdir(exist_ok=True)
        (entry / "refs" / "main").write_text(FAKE_COMMIT)
        for f in folder.iterdir():
            link = snap / f.name
            if f.is_file() and not link.exists():
                link.symlink_to(f.resolve())


def ensure_venv(venv: Path) -> Path:
    """The peer venv's python; created (``python -m venv`` + pip) when it lacks the pinned versions."""
    py = venv / "bin" / "python"
    check = ("import torch, transformers, librosa, soundfile, safetensors; "
             "assert torch.__version__.split('+')[0] == '2.13.0', torch.__version__; "
             "assert transformers.__version__ == '4.53.3', transformers.__version__")
    if py.is_file() and subprocess.run([str(py), "-c", check], capture_output=True).returncode == 0:
        return py
    print(f"creating {venv} ({' '.join(VENV_PACKAGES)}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *VENV_PACKAGES], check=True)
    return py


def peer_batch(model, rows: list[dict], waves: list) -> dict:
    """Our chat layout of ``rows`` as their ``forward`` takes it: left-padded ``input_ids``
    (placeholders over the audio span), ``attention_mask``, ``labels``, each span's
    (row, start) and transcript ids, and the raw waves (their side computes the mel)."""
    import torch

    from speechllm.models import chat_layout as L

    seqs, transcripts = [], []
    for r, w in zip(rows, waves):
        conv = [*r["messages"], {"role": "assistant", "content": r["response"]}]
        chat = L.render_chat(model.tokenizer, conv, model.config, num_audios=1, add_generation_prompt=False)
        seq, (ids,) = model.sequence(chat, [(len(w), r["transcript"])])
        if sum(seq.audio_mask) != PROMPT_SIZE:
            raise SystemExit(f"desta25_peer: a clip got {sum(seq.audio_mask)} audio vectors, their model "
                             f"makes {PROMPT_SIZE}; keep clips under 30 s")
        seqs.append(seq)
        transcripts.append(torch.tensor(ids, dtype=torch.long))
    t = L.collate_left_padded(seqs, model.pad_id)
    starts = [(i, int(row.nonzero()[0])) for i, row in enumerate(t["audio_mask"])]
    return {"input_ids": t["input_ids"], "attention_mask": t["attention_mask"], "labels": t["labels"],
            "start_positions": torch.tensor(starts), "transcripts": transcripts,
            "waves": [torch.as_tensor(w, dtype=torch.float32) for w in waves],
            "prompt_size": PROMPT_SIZE, "encoder_hub_id": ENCODER_HUB_ID}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--desta-clone", type=Path, required=True, help="local clone of kehanlu/DeSTA2.5-Audio")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="peer venv (created if missing)")
    ap.add_argument("--work", default="/tmp/speechllm_desta25_peer", help="scratch folder (data, cache, run)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side (after one warm-up step)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--qformer-layers", type=int, default=2,
                    help="their Q-Former depth (ours: 2 by default; DeSTA2.5's release: 6)")
    args = ap.parse_args()

    module = args.desta_clone / "desta" / "models" / "modeling_desta25.py"
    if not module.is_file():
        raise SystemExit(f"desta25_peer: {module} not found; pass --desta-clone a clone of kehanlu/DeSTA2.5-Audio")
    commit = subprocess.run(["git", "-C", str(args.desta_clone), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    peer_py = ensure_venv(args.venv)

    import torch
    from train_throughput import make_data

    from speechllm.assets.registry import asset_path
    from speechllm.audio.io import load_audio
    from speechllm.config import ModelConfig, RunConfig
    from speechllm.train import Trainer

    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    all_rows = make_data(work, 48)
    rows = [json.loads(x) for x in all_rows.read_text().splitlines() if x.strip()][: args.batch_size]
    batch_file = work / "batch.jsonl"  # exactly one batch: every step of ours is this batch
    batch_file.write_text("".join(json.dumps(r) + "\n" for r in rows))

    cfg = RunConfig(model=ModelConfig())  # the defaults
    cfg.data.train = [str(batch_file)]
    cfg.data.feature_cache = str(work / "cache")
    t = cfg.train
    t.output_dir, t.batch_size, t.max_steps = str(work / "run"), args.batch_size, 10**6
    t.save_every = t.eval_every = 0
    t.log_every = 10**6
    trainer = Trainer(cfg)
    waves = [load_audio(r["audio"]) for r in rows]
    seconds = [len(w) / 16000 for w in waves]

    stream = trainer._micro_batches()
    trainer.train_step([next(stream)])  # warm-up

    def time_ours() -> tuple[float, float, list[float]]:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        losses = [float(trainer.train_step([next(stream)])["loss"]) for _ in range(args.steps)]
        return time.process_time() - cpu0, time.perf_counter() - wall0, losses

    before = time_ours()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        whisper_dir, llm_dir = asset_path("whisper-tiny.en"), asset_path("smollm2-135m-instruct")
        hub_cache_alias(tmp / "hf", ENCODER_HUB_ID, whisper_dir)
        pb = peer_batch(trainer.model, rows, waves)
        torch.save(pb, tmp / "batch.pt")
        (tmp / "driver.py").write_text(DRIVER)
        env = dict(os.environ, HF_HOME=str(tmp / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   OMP_NUM_THREADS="1", PYTHONPATH="")
        proc = subprocess.run([str(peer_py), str(tmp / "driver.py"), str(args.desta_clone.resolve()),
                               str(tmp / "batch.pt"), str(whisper_dir), str(llm_dir), str(args.qformer_layers),
                               str(args.steps)], capture_output=True, text=True, env=env)
    (work / "peer.log").write_text(proc.stdout + proc.stderr)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"desta25_peer: their step did not run (exit {proc.returncode}): {last}; "
                         f"full log {work / 'peer.log'}")
    theirs = json.loads(line[len("RESULT "):])

    after = time_ours()
    # Per-step figures below divide by args.steps: the mean of the runs before and after theirs.
    ours = {"cpu_s": (before[0] + after[0]) / 2, "wall_s": (before[1] + after[1]) / 2,
            "losses": before[2] + after[2], "peak_rss_mib": peak_rss_mib()}

    n = args.steps * args.batch_size
    print(describe_machine())
    print(f"batch: {args.batch_size} clips of {min(seconds):.1f}-{max(seconds):.1f} s, "
          f"{int(pb['attention_mask'].sum()) / len(rows):.0f} positions and "
          f"{int((pb['labels'] != -100).sum()) / len(rows):.0f} answer tokens per row on average; "
          f"{args.steps} timed steps after one warm-up; DeSTA2.5 clone {commit}; their venv: torch "
          f"{theirs['torch']}, transformers {theirs['transformers']}, {theirs['threads']} thread, "
          f"taps {theirs['taps']}, Q-Former {args.qformer_layers} layers, {theirs['trainable'] / 1e6:.1f} M "
          f"trainable, LLM {theirs['llm_dtype']}")
    print(f"{'step':40s} {'samples/CPU-s':>14s} {'wall s/step':>12s} {'CPU s/step':>11s} {'peak RSS MiB':>13s}  losses")
    for name, r in (("DeSTA2.5 DeSTA25AudioModel (their code)", theirs), ("speechllm Trainer defaults", ours)):
        print(f"{name:40s} {n / r['cpu_s']:14.2f} {r['wall_s'] / args.steps:12.2f} {r['cpu_s'] / args.steps:11.2f} "
              f"{r['peak_rss_mib']:13.0f}  {' '.join(f'{v:.3f}' for v in r['losses'])}")
    print(f"ours before / after theirs: {before[0] / args.steps:.2f} / {after[0] / args.steps:.2f} CPU s per step")
    print(f"ratio ours/theirs: {theirs['cpu_s'] / ours['cpu_s']:.2f}x samples per CPU second, "
          f"{theirs['wall_s'] / ours['wall_s']:.2f}x per wall second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
