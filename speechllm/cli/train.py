"""``speechllm train``: train the adapter (and optional LoRA) from a recipe."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from speechllm.config.loader import range_arg

    p = sub.add_parser("train", help="train the modality adapter (and LoRA) on targets.jsonl files",
                       description="Train from a recipe. Works alone or under `accelerate launch` "
                       "(see recipes/accelerate/). Example: speechllm train --config recipes/X.yaml "
                       "train.max_steps=100")
    p.add_argument("--config", "-c", default=None, help="recipe YAML (default: built-in defaults)")
    from speechllm.cli import add_overrides

    add_overrides(p, "train.lr=3e-4")
    p.add_argument("--resume", default=None,
                   help="'auto' (newest checkpoint in train.output_dir, if any) or a checkpoint folder")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start from a speechllm checkpoint's weights, e.g. from `speechllm convert "
                   "desta2|desta25` (same as train.init_from=CHECKPOINT; the model settings are the checkpoint's)")
    p.add_argument("--stop-at-step", type=range_arg(int, ge=1), default=None,
                   help="save a checkpoint and stop after this optimiser step (for staged runs)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from speechllm.config import RunConfig, load_config
    from speechllm.train import train
    from speechllm.train.distributed import leave_distributed

    overrides = list(args.overrides)
    if args.init_from:
        overrides.append(f"train.init_from={args.init_from}")
    cfg = load_config(RunConfig, args.config, overrides)
    result = train(cfg, resume=args.resume, stop_at_step=args.stop_at_step)
    print(f"{result.status} at step {result.step}; run folder {result.output_dir}"
          + (f"; final checkpoint {result.final_checkpoint}" if result.final_checkpoint else "")
          + (f"; skipped rows {result.skipped}" if result.skipped else ""))
    leave_distributed()
    return 0
