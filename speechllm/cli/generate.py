"""``speechllm generate``: the frozen LLM answers an instruction about each seed description.

    speechllm generate described.jsonl targets.jsonl --llm offline:smollm2-135m-instruct
    speechllm generate described.jsonl targets.jsonl --prompt-pool builtin:attributes --shard 0/4
    speechllm generate merge targets.shard*.jsonl --output targets.jsonl --expect described.jsonl
"""

from __future__ import annotations

import argparse

#: the parser of ``speechllm generate merge`` (the command line's two words map to it)
MERGE_COMMAND = "generate-merge"

# generation.<field> and sampling.<field> set by a flag of the same name (flags left out keep the
# config's value).
_GENERATION_FLAGS = ("backend", "instruction", "prompt_pool", "system_prompt", "context_prompt", "chat_template",
                     "batch_size", "dtype", "device", "seed")
SAMPLING_FLAGS = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty")


def add_generation_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``generate`` and ``generate-replay``."""
    from speechllm.cli import add_recipe_options

    p.add_argument("--llm", default=None, help="the frozen chat LLM: offline:NAME, a local folder or a hub id "
                   "(default: model.llm of the config)")
    add_recipe_options(p, "its model:, generation: and sampling: sections apply", "sampling.top_p=0.9")
    p.add_argument("--backend", choices=["hf", "vllm"], default=None, help="generation backend (default hf)")
    p.add_argument("--system-prompt", default=None, help="system prompt put before the user turn")
    p.add_argument("--context-prompt", default=None,
                   help="system prompt shown only while generating, not stored for training "
                   "(context distillation); builtin:describe = 'the wrapped text describes an audio clip'; "
                   "builtin:describe-no-speech = the same plus how to answer for a clip with no speech")
    p.add_argument("--chat-template", default=None, metavar="FILE",
                   help="Jinja chat template file, for an LLM that ships none (or to replace its own)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="response length limit (default 256); "
                   "responses cut by it get finish_reason=length")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (default 1)")
    p.add_argument("--top-k", type=int, default=None, help="top-k sampling, 0 = off (default)")
    p.add_argument("--repetition-penalty", type=float, default=None, help="HF repetition penalty (1 = off)")
    p.add_argument("--batch-size", type=int, default=None, help="rows decoding at once (default: generation.batch_size, 64)")
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"], default=None,
                   help="LLM weights (auto: bf16 on GPUs and CPUs with fast bf16, else fp32)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=None, help="seed of prompt-pool draws and sampling (default 0)")
    p.add_argument("--shard", default=None, metavar="i/N",
                   help="process only shard i of N (0-based; ids split by a stable hash), e.g. 0/4")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_run_config(args: argparse.Namespace):
    """The RunConfig from --config, --set and the generation flags given on the command line."""
    from speechllm.config import RunConfig, load_config

    overrides = list(args.overrides)
    for name in _GENERATION_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            overrides.append(f"generation.{name}={_yaml_scalar(value)}")
    for name in SAMPLING_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            overrides.append(f"sampling.{name}={_yaml_scalar(value)}")
    for flag in ("drop_degenerate", "strict"):
        if getattr(args, flag, False):
            overrides.append(f"generation.{flag}=true")
    return load_config(RunConfig, args.config, overrides)


def _yaml_scalar(value) -> str:
    """A flag value as a YAML scalar that keeps its type (strings quoted)."""
    import json

    return json.dumps(value) if isinstance(value, str) else str(value)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate training targets: the frozen LLM answers an instruction about each seed description",
        description="Generate training targets from described rows (DESCRIBED.jsonl from `speechllm describe`). "
                    "`speechllm generate merge SHARD... --output FILE` joins the outputs of --shard runs.",
        usage="speechllm generate DESCRIBED.jsonl TARGETS.jsonl [options]\n"
              "       speechllm generate merge SHARD.jsonl... --output TARGETS.jsonl [--expect DESCRIBED.jsonl]",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="DESCRIBED.jsonl TARGETS.jsonl (`speechllm generate merge --help`: joining shards)")
    add_generation_options(p)
    p.add_argument("--instruction", default=None,
                   help="fixed instruction (default DeSTA2's 'What can you hear from the audio?')")
    p.add_argument("--prompt-pool", default=None, metavar="FILE",
                   help="draw each row's instruction (seeded) from a text file, one a line; "
                        "builtin:attributes = shipped direct attribute questions")
    p.add_argument("--drop-degenerate", action="store_true",
                   help="move empty and looping responses to TARGETS.dropped.jsonl instead of keeping them")
    p.add_argument("--strict", action="store_true", help="a row without a description is an error (default: skip and count)")
    p.set_defaults(func=_run)

    # `speechllm generate merge` is a sub-command of its own (its options, its help); the command
    # line reaches it through parse_command_line, which reads "generate merge" as MERGE_COMMAND.
    m = sub.add_parser(MERGE_COMMAND, prog="speechllm generate merge",
                       description="Join the outputs of `speechllm generate --shard i/N` runs into one file.")
    m.add_argument("shards", nargs="+", metavar="SHARD.jsonl", help="shard files, in the order to join them")
    m.add_argument("--output", "-o", required=True, help="the joined output file")
    m.add_argument("--expect", default=None, metavar="DESCRIBED.jsonl",
                   help="check that every described id of this input is present")
    m.add_argument("--allow-incomplete", action="store_true", help="write even when ids are missing (duplicates still fail)")
    m.set_defaults(func=_merge)


def _run(args: argparse.Namespace) -> int:
    from speechllm.errors import SpeechLLMError

    if len(args.paths) != 2:
        raise SpeechLLMError("usage: speechllm generate DESCRIBED.jsonl TARGETS.jsonl --llm MODEL "
                             "(or: speechllm generate merge SHARD... --output FILE)")
    from pathlib import Path

    from speechllm.config import save_resolved_config
    from speechllm.generate.faithfulness import faithfulness_summary, format_faithfulness_table
    from speechllm.generate.targets import generate_targets, sidecar_path
    from speechllm.utils.jsonl import iter_jsonl

    cfg = load_run_config(args)
    if args.llm:
        cfg.model.llm = args.llm
    source, output = args.paths
    summary = generate_targets(source, output, cfg, shard=args.shard, progress=not args.no_progress)
    save_resolved_config(cfg, Path(output).parent, name=sidecar_path(output, "config.yaml").name)
    for line in summary.lines():
        print(line)
    table = faithfulness_summary(row for _, row in iter_jsonl(output))
    print(f"faithfulness to labelled attributes ({sidecar_path(output, 'faithfulness.json')}):")
    print(format_faithfulness_table(table))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from speechllm.generate.merge import merge_shards

    report = merge_shards(args.shards, args.output, expected=args.expect, allow_incomplete=args.allow_incomplete)
    for line in report.lines():
        print(line)
    print(f"wrote {args.output}")
    return 0
