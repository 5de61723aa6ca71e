"""``speechllm merge``: interpolate a LoRA checkpoint toward the base, one checkpoint per λ."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="write θ0 + λ(θ − θ0) checkpoints for a sweep of λ (LoRA runs)")
    p.add_argument("checkpoint", help="trained checkpoint folder (e.g. exp/run/final)")
    p.add_argument("out_dir", help="folder that receives lambda-<λ>/ checkpoints")
    p.add_argument("--lambdas", default="0.25,0.5,0.75,1.0", help="comma-separated λ values")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from speechllm.errors import ConfigError
    from speechllm.train.merge import merge_checkpoint

    try:
        lambdas = [float(x) for x in args.lambdas.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--lambdas {args.lambdas!r}: expected numbers separated by commas") from None
    for path in merge_checkpoint(args.checkpoint, args.out_dir, lambdas):
        print(path)
    return 0
