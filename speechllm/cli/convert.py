"""``speechllm convert desta2|desta25 SRC OUT``: a released DeSTA model as a speechllm checkpoint."""

from __future__ import annotations

import argparse


def _taps(text: str) -> list[int]:
    try:
        taps = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices, got {text!r}") from None
    if not taps or min(taps) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative layer indices, got {text!r}")
    return taps


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="turn a released DeSTA2 / DeSTA2.5 model into a speechllm checkpoint",
        description=(
            "desta2: SRC is qformer_connector.pth or its folder (read with torch.load(weights_only=True)); "
            "desta25: SRC is the folder with config.json + model.safetensors (LoRA included when present). "
            "The frozen bases come from SRC's config.json unless --encoder/--llm name them (a local copy, "
            "or offline:NAME); they are loaded once to check the shapes. The checkpoint runs the model as "
            "DeSTA's code does (docs/model.md). Example: speechllm convert desta25 DeSTA2.5-Audio-Llama-3.1-8B "
            "exp/desta25 --llm /models/Llama-3.1-8B-Instruct"
        ),
    )
    p.add_argument("kind", choices=["desta2", "desta25"], help="which release format SRC is")
    p.add_argument("source", metavar="SRC", help="the release: a folder, or its weights file")
    p.add_argument("output", metavar="OUT", help="checkpoint folder to write")
    p.add_argument("--encoder", default=None, help="Whisper to use instead of the one SRC's config.json names")
    p.add_argument("--llm", default=None, help="chat LLM to use instead of the one SRC's config.json names")
    p.add_argument("--encoder-layers", type=_taps, default=None, metavar="I,J,...",
                   help="taps, when SRC's config names none and the encoder is not a DeSTA size "
                   "(default: target_layer_ids from config.json, else DeSTA's per-size taps)")
    p.add_argument("--dtype", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                   help="dtype the bases load in while converting (default: bf16, as DeSTA runs them); "
                   "the adapter is saved in fp32 whatever this is")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from speechllm.models.convert_desta import convert_release

    model = convert_release(args.kind, args.source, args.output, encoder=args.encoder, llm=args.llm,
                            encoder_layers=args.encoder_layers, dtype=args.dtype, overwrite=args.overwrite)
    lora = f", LoRA r={model.config.lora.r}" if model.config.lora.enabled else ""
    print(f"convert: wrote {args.output} ({args.kind}: taps {model.encoder.layers} as "
          f"{model.config.tap_point}, {model.config.qformer_layers}-layer Q-Former{lora}; "
          f"encoder {model.config.encoder}, llm {model.config.llm})")
    return 0
