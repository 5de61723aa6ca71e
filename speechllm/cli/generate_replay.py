"""``speechllm generate-replay``: text-only replay rows in the LLM's own words.

    speechllm generate-replay replay.jsonl --llm offline:smollm2-135m-instruct --kind pseudo --num 2000
    speechllm generate-replay replay.jsonl --kind self-output --instructions qa.jsonl --samples 4 \\
        --temperature 0.7 --verifier contains
    speechllm generate-replay replay.jsonl --kind paraphrase --instructions qa.jsonl
    speechllm generate-replay replay.jsonl --kind minimum-change --instructions qa.jsonl --editor ./bigger-llm
"""

from __future__ import annotations

import argparse

from speechllm.cli.generate import add_generation_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate-replay",
        help="make text-only replay rows (pseudo / self-output / paraphrase / minimum-change) with the LLM",
        description="Write text-only rows (messages + response, no audio) in the LLM's own words, for "
                    "mixing into training as replay (data.replay).",
    )
    p.add_argument("output", metavar="OUT.jsonl", help="replay rows (appended; a restart skips finished ids)")
    p.add_argument("--kind", required=True, choices=["pseudo", "self-output", "paraphrase", "minimum-change"],
                   help="pseudo: Magpie (the LLM writes the question from its pre-query template, then answers); "
                        "self-output: answers to given instructions, kept if --verifier accepts; paraphrase: the "
                        "LLM rewrites gold answers; minimum-change: an editor fixes only what is wrong in the answer")
    add_generation_options(p)
    p.add_argument("--num", type=int, default=None, help="pseudo: rows to attempt (ids pseudo-000000 ...)")
    p.add_argument("--instructions", default=None, metavar="FILE",
                   help="self-output/paraphrase/minimum-change: .jsonl with instruction (+ answer, id) or a text file, one a line")
    p.add_argument("--samples", type=int, default=None, help="self-output: answers sampled per instruction (K)")
    p.add_argument("--verifier", default=None,
                   help="self-output: exact | contains (vs the item's answer) | regex:PATTERN | module:function "
                        "(imported and called as function(instruction, response, item) -> bool)")
    p.add_argument("--editor", default=None, help="minimum-change: local editor LLM (offline:NAME, folder, hub id)")
    p.add_argument("--editor-url", default=None, help="minimum-change: OpenAI-compatible endpoint base URL")
    p.add_argument("--editor-model", default=None, help="minimum-change: model name sent to --editor-url")
    p.add_argument("--editor-api-key-env", default=None,
                   help="environment variable holding the endpoint's API key (default OPENAI_API_KEY)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from speechllm.cli.generate import _yaml_scalar, load_run_config
    from speechllm.generate.replay import generate_replay

    for name in ("samples", "verifier", "editor", "editor_url", "editor_model", "editor_api_key_env"):
        value = getattr(args, name)
        if value is not None:
            args.overrides.append(f"replay.{name}={_yaml_scalar(value)}")
    cfg = load_run_config(args)
    from speechllm.config import RunConfig
    from speechllm.config.loader import moved_key

    given = {moved_key(RunConfig, o.split("=", 1)[0].strip()) for o in args.overrides}
    refuse_file_named_code_or_endpoint(cfg, given, args.config)
    if args.llm:
        cfg.model.llm = args.llm
    summary = generate_replay(args.output, args.kind, cfg, instructions=args.instructions, num=args.num,
                              shard=args.shard, progress=not args.no_progress)
    for line in summary.lines():
        print(line)
    return 0


def refuse_file_named_code_or_endpoint(cfg, given_by_user: set[str], config_file: str | None) -> None:
    """A recipe may not choose code to run or a place to send a secret: a ``module:function``
    verifier (imported and called) and ``editor_url`` (receives ``$editor_api_key_env``) are
    accepted only from the command line (a flag or a ``key=value`` override). Recipes are shared
    files, like checkpoints (docs/security.md)."""
    from speechllm.errors import SpeechLLMError

    replay = cfg.replay
    source = config_file or "the recipe"
    verifier = replay.verifier or ""
    if ":" in verifier and not verifier.startswith("regex:") and "replay.verifier" not in given_by_user:
        raise SpeechLLMError(
            f"{source}: replay.verifier {verifier!r} names Python code to import and call; a file cannot "
            "choose that, only the person running the command: pass --verifier on the command line if you trust it")
    if replay.editor_url and "replay.editor_url" not in given_by_user:
        raise SpeechLLMError(
            f"{source}: replay.editor_url {replay.editor_url!r} would receive the API key in "
            f"${replay.editor_api_key_env}; a file cannot choose where a key is sent, only the person running the "
            "command: pass --editor-url (and --editor-api-key-env) on the command line")
