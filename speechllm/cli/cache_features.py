"""``speechllm cache-features``: store the frozen encoder's tapped features once.

Across processes or machines: ``--shard i/N`` per process into one folder (shared file system),
then ``--merge`` (docs/scaling.md, "The feature cache").
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from speechllm.config.loader import range_arg

    p = sub.add_parser("cache-features", help="cache the frozen encoder's tapped features and transcripts (fp16, sharded)")
    p.add_argument("--config", "-c", default=None, help="recipe YAML whose model and data.train are used")
    from speechllm.cli import add_overrides

    add_overrides(p, "model.encoder_layers=[0,1]")
    p.add_argument("--out", default=None, help="cache folder (default: data.feature_cache)")
    p.add_argument("--batch-size", type=range_arg(int, ge=1), default=8, help="audios encoded together")
    p.add_argument("--device", default="auto",
                   help="where the encoder runs: auto (CUDA when visible), cpu, cuda, cuda:N")
    p.add_argument("--shard", default=None, metavar="i/N",
                   help="encode only shard i of N (0-based, by id hash, as every stage shards) into the shard's "
                        "own files; run one per GPU or machine into the same folder, then --merge")
    p.add_argument("--merge", action="store_true",
                   help="fold the shard indexes into index.json and count the training rows still missing "
                        "(encodes nothing)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from speechllm.config import RunConfig, load_config
    from speechllm.errors import ConfigError
    from speechllm.train.feature_cache import build_cache, merge_shards
    from speechllm.utils.jsonl import parse_shard

    cfg = load_config(RunConfig, args.config, args.overrides)
    out = args.out or cfg.data.feature_cache
    if not out:
        raise ConfigError("give --out or data.feature_cache: the folder that receives the cache")
    files = list(cfg.data.train) + ([cfg.data.valid] if cfg.data.valid else [])
    if args.merge:
        if args.shard is not None:
            raise ConfigError("cache-features: --merge joins every shard; drop --shard")
        counts = merge_shards(out, files)
        print(f"{out}: {counts}")
        if counts.get("missing"):
            print(f"{out}: {counts['missing']} rows have no features yet: re-run the shards that lack them "
                  "(a re-run encodes only what is missing)")
            return 1
        return 0
    shard = parse_shard(args.shard)
    device = _device(args.device)
    from speechllm.models import SpeechLLM

    model = SpeechLLM.from_config(cfg.model, device=device)
    counts = build_cache(model, files, out, batch_size=args.batch_size, shard=shard)
    print(f"{out}: {counts}")
    return 0


def _device(choice: str) -> str:
    """``auto`` -> CUDA when visible; an explicit ``cuda`` without a visible GPU is an error."""
    import os

    import torch

    from speechllm.errors import ConfigError
    from speechllm.llm_runtime import resolve_device

    device = resolve_device(choice)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"cache-features --device {choice}: no CUDA device is visible (torch "
                          f"{torch.__version__}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r});"
                          " use --device cpu or auto")
    return device
