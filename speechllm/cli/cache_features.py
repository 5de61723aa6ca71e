"""``speechllm cache-features``: store the frozen encoder's tapped features once."""

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
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from speechllm.config import RunConfig, load_config
    from speechllm.errors import ConfigError
    from speechllm.models import SpeechLLM
    from speechllm.train.feature_cache import build_cache

    cfg = load_config(RunConfig, args.config, args.overrides)
    out = args.out or cfg.data.feature_cache
    if not out:
        raise ConfigError("give --out or data.feature_cache: the folder that receives the cache")
    model = SpeechLLM.from_config(cfg.model)
    files = list(cfg.data.train) + ([cfg.data.valid] if cfg.data.valid else [])
    counts = build_cache(model, files, out, batch_size=args.batch_size)
    print(f"{out}: {counts}")
    return 0
