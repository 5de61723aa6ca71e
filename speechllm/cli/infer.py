"""``speechllm infer`` / ``speechllm-infer``: answer a prompt about audio with a trained model."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from speechllm.cli import add_recipe_options
    from speechllm.config.loader import range_arg

    p = sub.add_parser(
        "infer",
        help="generate a reply about audio (one request, or a JSONL manifest) with a checkpoint",
        description=(
            "One request: --model DIR [--audio FILE ...] --prompt TEXT. Without --audio the LLM "
            "answers text only. A prompt without the audio locator (<|AUDIO|> by default) gets one "
            "locator per audio prepended; more locators than audios is an error. Batch: "
            "--manifest in.jsonl --output out.jsonl (rows: id, audio, prompt|messages, system, "
            "transcript; resumable: a rerun skips ids already in the output, and is refused when its model "
            "or sampling options differ from the ones recorded in <output>.settings.json)."
        ),
    )
    p.add_argument("--model", required=True, help="checkpoint folder (from `speechllm init-model` or training)")
    p.add_argument("--audio", action="append", default=[], metavar="FILE",
                   help="audio file (wav/flac/ogg/mp3, any rate, mono or stereo); repeat for several")
    p.add_argument("--prompt", default=None, help="the user's message (may hold the audio locator); with --manifest, the default for rows without prompt or messages")
    p.add_argument("--system", default=None, help="optional system prompt")
    p.add_argument("--transcript", action="append", default=None, metavar="TEXT",
                   help="transcript of each audio, in order (default: Whisper's own, after VAD)")
    add_recipe_options(p, "its sampling: section gives the defaults of the five flags below", "sampling.top_p=0.9")
    p.add_argument("--max-new-tokens", type=range_arg(int, ge=1), default=None,
                   help="generation length limit (default: sampling.max_new_tokens, 256)")
    p.add_argument("--temperature", type=range_arg(float, ge=0), default=None,
                   help="sampling temperature (0 = greedy; default: sampling.temperature, 0)")
    p.add_argument("--top-p", type=range_arg(float, gt=0, le=1), default=None,
                   help="nucleus sampling mass (with --temperature > 0; default: sampling.top_p, 1)")
    p.add_argument("--top-k", type=range_arg(int, ge=0), default=None,
                   help="top-k sampling (0 = off; with --temperature > 0; default: sampling.top_k, 0)")
    p.add_argument("--repetition-penalty", type=range_arg(float, gt=0), default=None,
                   help="HF repetition penalty (1 = off; default: sampling.repetition_penalty, 1)")
    p.add_argument("--seed", type=range_arg(int, ge=0), default=0, help="seed for sampling")
    p.add_argument("--ignore-manifest-transcripts", action="store_true",
                   help="batch mode: ignore rows' 'transcript' fields, so the model hears its own ASR "
                   "transcript as in deployment (a data manifest's gold transcript flatters the result)")
    p.add_argument("--show-transcript", action="store_true",
                   help="print the transcript that entered the audio span (Whisper's, or --transcript) to stderr")
    p.add_argument("--stream", action="store_true", help="print the reply as it is generated")
    p.add_argument("--timings", action="store_true",
                   help="print load/encoder/ASR/first-token times, tokens/s and real-time factor to stderr")
    p.add_argument("--manifest", default=None, help="JSONL of requests (batch mode; needs --output)")
    p.add_argument("--limit", type=range_arg(int, ge=1), default=None, help="batch mode: answer only the first N rows")
    p.add_argument("--output", default=None, help="JSONL of replies (batch mode; appended, resumable)")
    p.add_argument("--batch-size", type=range_arg(int, ge=1), default=16,
                   help="batch mode: requests answered together (1 = one at a time; greedy answers are "
                   "the same, sampled ones are drawn per row)")
    p.add_argument("--dtype", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                   help="weights dtype (default: the checkpoint's, auto = bf16 where fast)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1, auto (CUDA when visible)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from speechllm.errors import SpeechLLMError
    from speechllm.infer import (
        GenerationOptions,
        InferRequest,
        build_messages,
        format_timings,
        load_model,
        run_manifest,
        run_request,
    )

    if args.manifest and not args.output:
        raise SpeechLLMError("--manifest needs --output (the JSONL file replies are appended to)")
    if args.manifest:  # before the (slow) model load
        from speechllm.utils.fs import refuse_same_file

        refuse_same_file(args.manifest, args.output)
    if not args.manifest and args.prompt is None and not args.audio:
        raise SpeechLLMError("give --prompt and/or --audio (or --manifest with --output)")
    if args.transcript is not None and len(args.transcript) != len(args.audio):
        raise SpeechLLMError(
            f"{len(args.transcript)} --transcript value(s) for {len(args.audio)} --audio file(s); give one per audio"
        )
    from speechllm.cli.generate import SAMPLING_FLAGS
    from speechllm.config import RunConfig, load_config

    flags = [f"sampling.{name}={getattr(args, name)}" for name in SAMPLING_FLAGS if getattr(args, name) is not None]
    sampling = load_config(RunConfig, args.config, [*args.overrides, *flags]).sampling  # a flag given wins
    options = GenerationOptions(**{name: getattr(sampling, name) for name in SAMPLING_FLAGS}, seed=args.seed)
    waves = None
    if not args.manifest:  # decode and check the audio before the (slow) model load
        from speechllm.audio import load_audio

        waves = [load_audio(path) for path in args.audio]
    from speechllm.models.checkpoint import trained_weights_sha256

    t0 = time.perf_counter()
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    load_s = time.perf_counter() - t0
    if args.manifest:
        summary = run_manifest(model, args.manifest, args.output, options, default_prompt=args.prompt,
                               default_system=args.system, limit=args.limit,
                               settings={"model": str(Path(args.model).resolve()), "dtype": args.dtype,
                                         "weights_sha256": trained_weights_sha256(args.model)},
                               use_manifest_transcripts=not args.ignore_manifest_transcripts,
                               batch_size=args.batch_size)
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(summary.errors.items())) or "none"
        print(f"infer: {summary.written} written, {summary.skipped_done} already done, errors: {errors}; "
              f"{summary.seconds:.1f}s -> {args.output}", file=sys.stderr)
        return 0
    request = InferRequest(messages=build_messages(args.prompt, args.system), audio_paths=list(args.audio),
                           transcripts=args.transcript, waves=waves)
    result = run_request(model, request, options, stream=args.stream)
    if args.show_transcript:
        source = "given" if args.transcript is not None else "heard"
        for path, text in zip(args.audio, result.transcripts):
            print(f"transcript ({source}) {path}: {text!r}", file=sys.stderr)
    if not args.stream:
        print(result.response)
    if args.timings:
        print(f"timings: load_s={load_s:.3f} {format_timings(result)}", file=sys.stderr)
    return 0
