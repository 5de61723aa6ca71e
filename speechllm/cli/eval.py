"""``speechllm eval``: benchmarks, the retention suite, the built-in benchmark, run comparison.

    speechllm eval --model exp/run --bench builtin:data/builtin.jsonl --bench retention \\
        --base offline:smollm2-135m-instruct --out exp/run/eval
    speechllm eval build-builtin data/synth/test.jsonl data/builtin.jsonl
    speechllm eval compare exp/run1/eval exp/run2/eval --out exp/compare
    speechllm eval list
"""

from __future__ import annotations

import argparse

from speechllm.config import range_arg


def register(sub: argparse._SubParsersAction) -> None:
    from speechllm.cli import add_recipe_options

    p = sub.add_parser(
        "eval", help="evaluate a model on benchmarks and the retention suite; build-builtin; compare runs",
        description="Evaluate a SpeechLLM run folder (or a bare LLM, for text references) on "
                    "benchmarks read from local files. Sub-commands: build-builtin, compare, list.")
    p.add_argument("--model", help="SpeechLLM run folder, or a bare LLM (offline:NAME, folder, hub id) for text references")
    p.add_argument("--bench", action="append", default=[], metavar="SPEC",
                   help="benchmark NAME:PATH (repeatable), a .jsonl path, or 'retention'; `speechllm eval list` shows names")
    p.add_argument("--out", help="output folder (predictions, scores, report.json/.md, plots)")
    p.add_argument("--base", default=None,
                   help="base LLM: reference of the retention suite and text side of the speech-vs-text gap")
    p.add_argument("--judge", default=None,
                   help="judge for open-ended items: a local model (offline:NAME, folder, hf:ID) or an OpenAI-compatible URL")
    p.add_argument("--judge-model", default=None, help="model name to request at a --judge URL")
    p.add_argument("--judge-swap", action="store_true", help="judge each answer in both positions and average")
    p.add_argument("--scoring", action="append", default=[], metavar="[BENCH=]PROFILE",
                   help="score a benchmark with another profile (repeatable; a bare PROFILE applies to "
                   "every benchmark); default: each benchmark's official rule, e.g. mmau-official. "
                   "`speechllm eval list` shows the profiles")
    p.add_argument("--gap-bench", default=None, metavar="SPEC",
                   help="benchmark for the speech-vs-text gap (items with audio and a description), e.g. builtin:FILE")
    p.add_argument("--audio-root", default=None, help="folder the benchmark's relative audio paths are under (default: beside its file)")
    p.add_argument("--retention-prompts", default=None, help="held-out text prompts (.jsonl with 'prompt', or one a line); default: built-in")
    p.add_argument("--harmful-prompts", default=None, help="harmful requests for the refusal rate; default: built-in mild sample")
    add_recipe_options(p, "its eval: section gives the defaults of --batch-size, --max-new-tokens and --seed",
                       "eval.batch_size=4")
    p.add_argument("--batch-size", type=range_arg(int, ge=1), default=None,
                   help="items per generation batch (default: eval.batch_size, 8)")
    p.add_argument("--max-new-tokens", type=range_arg(int, ge=1), default=None,
                   help="answer length limit (default: eval.max_new_tokens, 128)")
    p.add_argument("--limit", type=range_arg(int, ge=1), default=None,
                   help="evaluate only the first N items of each benchmark")
    p.add_argument("--seed", type=range_arg(int, ge=0, lt=2**32), default=None,
                   help="random seed, recorded in the report (default: eval.seed, 0)")
    p.add_argument("--no-resume", action="store_true", help="start over instead of continuing predictions.jsonl")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)

    esub = p.add_subparsers(dest="eval_command", metavar="ACTION")
    b = esub.add_parser("build-builtin", help="build the built-in benchmark from a synthetic held-out manifest")
    b.add_argument("manifest", help="manifest JSONL of the synthetic corpus (held-out split)")
    b.add_argument("output", help="benchmark JSONL to write")
    b.add_argument("--split", default=None, help="manifest split to use (default: test/heldout/eval rows, else all)")
    b.add_argument("--seed", dest="build_seed", type=range_arg(int, ge=0, lt=2**32), default=0,
                   help="seed for distractors and constraints")
    b.add_argument("--style", default="choice", choices=["choice", "short"],
                   help="choice: gender/accent/pitch as multiple choice (MMAU style); short: one-word "
                   "answers, scored strictly (small models follow it better)")
    b.add_argument("--constraints-per-utterance", type=range_arg(int, ge=0), default=1,
                   help="constraint-following items per utterance")
    b.set_defaults(func=_build_builtin)

    c = esub.add_parser("compare", help="put evaluation runs side by side (+ learning-vs-forgetting plot)")
    c.add_argument("runs", nargs="+", metavar="RUN", help="evaluation output folders (each with report.json)")
    c.add_argument("--out", dest="compare_out", default=None, help="folder for compare.md/.json and the plot")
    c.set_defaults(func=_compare)

    ls = esub.add_parser("list", help="list benchmark names and supported constraint ids")
    ls.set_defaults(func=_list)


def _run(args: argparse.Namespace) -> int:
    from speechllm.errors import SpeechLLMError
    from speechllm.eval.suite import EvalOptions, evaluate

    missing = [name for name, value in (("--model", args.model), ("--bench", args.bench), ("--out", args.out)) if not value]
    if missing:
        raise SpeechLLMError(f"missing {', '.join(missing)} (see `speechllm eval --help`)")
    from speechllm.config import RunConfig, load_config

    recipe = load_config(RunConfig, args.config, args.overrides).eval  # a flag given wins
    options = EvalOptions(
        scoring=parse_scoring_args(args.scoring),
        out_dir=args.out, base=args.base, judge=args.judge, judge_model=args.judge_model,
        judge_swap=args.judge_swap, audio_root=args.audio_root,
        batch_size=recipe.batch_size if args.batch_size is None else args.batch_size,
        max_new_tokens=recipe.max_new_tokens if args.max_new_tokens is None else args.max_new_tokens,
        limit=args.limit, resume=not args.no_resume, seed=recipe.seed if args.seed is None else args.seed,
        retention_prompts=args.retention_prompts, harmful_prompts=args.harmful_prompts,
        gap_bench=args.gap_bench, progress=not args.no_progress)
    report = evaluate(args.model, args.bench, options)
    for name, bench in report["benchmarks"].items():
        score = bench.get("target_score")
        skipped = sum(v["count"] for v in (bench.get("skipped") or {}).values())
        print(f"{name}: {bench['answered']}/{bench['items']} answered, skipped {skipped}, "
              f"target score {'-' if score is None else f'{score:.4f}'}")
    ret = report.get("retention")
    if ret:
        print(f"retention: KL-to-base {ret['kl_to_base']}, dNLL {ret['delta_nll']}, top-1 {ret['top1_agreement']}")
    print(f"report: {args.out}/report.md")
    return 0


def parse_scoring_args(values: list[str]) -> dict[str, str]:
    """``--scoring`` values -> {benchmark name or "*": profile}; unknown profiles fail at once."""
    from speechllm.eval.scoring_profiles import get_profile

    out: dict[str, str] = {}
    for value in values:
        bench, sep, profile = value.rpartition("=")
        out[bench.strip().lower() if sep else "*"] = get_profile(profile.strip()).name
    return out


def _build_builtin(args: argparse.Namespace) -> int:
    from speechllm.eval.builtin import write_builtin

    n = write_builtin(args.manifest, args.output, split=args.split, seed=args.build_seed,
                      constraints_per_utterance=args.constraints_per_utterance, style=args.style)
    print(f"wrote {n} items to {args.output}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from speechllm.eval.report import compare_runs

    result = compare_runs(args.runs, args.compare_out)
    print(result["markdown"])
    if args.compare_out:
        print(f"written to {args.compare_out}/compare.md")
    return 0


def _list(args: argparse.Namespace) -> int:
    from speechllm.eval.constraints import list_constraints
    from speechllm.eval.loaders import DEFAULT_SCORING, known_benchmarks
    from speechllm.eval.scoring_profiles import PROFILES

    print("benchmarks (default scoring profile):")
    for name, desc in known_benchmarks().items():
        default = f" [{DEFAULT_SCORING[name]}]" if name in DEFAULT_SCORING else ""
        print(f"  {name:16s} {desc}{default}")
    print("scoring profiles (--scoring [BENCH=]PROFILE):")
    for name, profile in PROFILES.items():
        print(f"  {name:18s} {profile.description}")
    for rules in ("speechllm", "speech-ifeval"):
        print(f"constraints ({rules} rules):")
        for cid, desc in list_constraints(rules).items():
            print(f"  {cid:45s} {desc}")
    return 0
