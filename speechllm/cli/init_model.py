"""``speechllm init-model``: write an untrained checkpoint (new adapter, named frozen bases)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from speechllm.config.loader import range_arg

    p = sub.add_parser(
        "init-model",
        help="write an untrained checkpoint: a fresh adapter plus the config naming the frozen bases",
        description="Example: speechllm init-model --encoder offline:whisper-tiny.en "
                    "--llm offline:smollm2-135m-instruct --adapter qformer exp/init",
    )
    p.add_argument("output", metavar="OUT", help="checkpoint folder to write")
    p.add_argument("--config", "-c", default=None, help="recipe YAML whose `model:` section is used")
    p.add_argument("--encoder", default=None, help="Whisper: offline:NAME, a folder, a hub id, or an openai-whisper .pt")
    p.add_argument("--llm", default=None, help="chat LLM: offline:NAME, a folder, or a hub id")
    p.add_argument("--adapter", default=None,
                   help="adapter registry name (speechllm.models.adapters.adapter_names(): qformer, mlp, ...)")
    p.add_argument("--lora", action="store_true", help="add (untrained) LoRA adapters on the LLM")
    p.add_argument("--seed", type=range_arg(int, ge=0), default=0, help="seed of the adapter's initialisation")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    from speechllm.cli import add_overrides

    # A key without a section is a model key here (num_queries=32 = model.num_queries=32).
    add_overrides(p, "model.num_queries=32 (or num_queries=32)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from speechllm.config import RunConfig, load_config
    from speechllm.errors import SpeechLLMError

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise SpeechLLMError(f"{out} already exists; pass --overwrite to replace it")
    overrides = [o if o.startswith("model.") else f"model.{o}" for o in args.overrides]
    for flag, key in ((args.encoder, "encoder"), (args.llm, "llm"), (args.adapter, "adapter")):
        if flag is not None:
            overrides.append(f"model.{key}={flag}")
    if args.lora:
        overrides.append("model.lora.enabled=true")
    config = load_config(RunConfig, args.config, overrides).model
    from speechllm.models.adapters import adapter_class

    adapter_class(config.adapter)  # an unknown name stops here, listing adapter_names()

    from speechllm.models.speech_llm import SpeechLLM

    model = SpeechLLM.from_config(config, seed=args.seed)
    model.save_pretrained(out, overwrite=True)
    n = sum(p.numel() for p in model.trainable_parameters())
    print(f"init-model: wrote {out} ({config.adapter} adapter, {n:,} trainable parameters, "
          f"taps {model.encoder.layers}, encoder {config.encoder}, llm {config.llm})")
    return 0
