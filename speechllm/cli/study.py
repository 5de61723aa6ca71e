"""``speechllm study forgetting``: the learning-vs-forgetting grid of every control (docs/forgetting.md)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from speechllm.study.forgetting import CONTROLS, MERGE_LAMBDAS, SCOPES, build_grid
    from speechllm.study.targets import TARGET_SOURCES

    p = sub.add_parser("study", help="run a measurement study (forgetting: every control's learning-vs-forgetting)")
    studies = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    grid_doc = build_grid.__doc__.split("\n", 2)[2]
    f = studies.add_parser(
        "forgetting", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train a grid of target source x update scope x control and plot learning against forgetting",
        description=(
            "Train every cell of a grid (target source x update scope x control) for --seeds seeds with the "
            "recipe's settings, measure learning (held-out gender accuracy through the audio, target loss) and "
            "forgetting (KL-to-base and dNLL on held-out text prompts, IFEval-style instruction following, "
            "refusal rate, speech-vs-text gap), and write OUT/table.md, table.json, table.csv and scatter.png "
            "(mean and sd over seeds). Shared corpus, targets and replay rows are made once under OUT/shared; "
            "a finished cell is not rerun; an OUT made with other settings is refused.\n\n"
            f"target sources: {', '.join(TARGET_SOURCES)}\n"
            f"update scopes:  {', '.join(SCOPES)}\n"
            f"controls:       {', '.join(CONTROLS)}\n"
            f"merge λ sweep:  {', '.join(map(str, MERGE_LAMBDAS))} (measured on trained cells, no retraining)\n"
            "scopes prompt and prefix: model.prompt_tuning and model.prefix_tuning; every measure reads the learned "
            "prompt or prefix\n"
            "time per cell (train_s/eval_s, train_cpu_s/eval_cpu_s) is in each result.json and the table; "
            "Whisper tiny.en + SmolLM2-135M at the defaults: ~1.9 CPU-minutes per cell (30 steps and its "
            "measures), the full grid ~3.2 CPU-hours for 3 seeds, about 1 h 45 min on a 2-core machine with "
            "--num-threads 2 --workers 2 (docs/forgetting.md, 'Cost and the full grid')\n\n"
            "grids (--grid):\n" + grid_doc),
    )
    f.add_argument("--recipe", required=True, help="recipe YAML (model and train settings of every cell)")
    f.add_argument("--out", default="exp/study_forgetting", help="output folder (default: %(default)s)")
    f.add_argument("--grid", default="full", choices=["full", "reduced", "ci"], help="which cells (default: full)")
    f.add_argument("--cells", default=None,
                   help="instead of --grid: comma-separated cells source.scope.control, e.g. gold.lora.stm2.5")
    f.add_argument("--seeds", type=int, default=3, help="seeds per cell: 0..N-1 (default: 3)")
    f.add_argument("--steps", type=int, default=30, help="training steps per cell (default: %(default)s)")
    f.add_argument("--num", type=int, default=200, help="synthetic utterances when no --data (default: %(default)s)")
    f.add_argument("--eval-rows", type=int, default=24, help="held-out utterances measured (default: %(default)s)")
    f.add_argument("--data", default=None,
                   help="a `speechllm synth`-style folder (train.jsonl, test.jsonl/dev.jsonl with gender labels) "
                   "instead of synthesising one")
    f.add_argument("--max-new-tokens", type=int, default=24,
                   help="longest answer generated when measuring (default: %(default)s)")
    f.add_argument("--warm-steps", type=int, default=60,
                   help="start every cell from one adapter trained alone on the gold targets for this many steps "
                   "(made once under OUT/shared/warm; its held-out accuracy is the table's 'warm start' row); without "
                   "it a cell's few steps rarely tie the answers to the audio (default: %(default)s)")
    f.add_argument("--max-cells", type=int, default=None, help="stop after this many new cells (resume later)")
    f.add_argument("--workers", type=int, default=1,
                   help="run cells in this many processes (each claims the next cell and uses cores/N threads; the "
                   "shared stage and warm start run first with the command's own thread count; default: %(default)s)")
    f.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # a child of --workers
    f.add_argument("overrides", nargs="*", help="recipe overrides key=value (e.g. train.lr=1e-3)")
    f.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from speechllm.study.forgetting import run_study

    table = run_study(args.recipe, args.out, grid=args.grid, cells=args.cells, seeds=args.seeds, steps=args.steps,
                      num=args.num, eval_rows=args.eval_rows, data=args.data, overrides=args.overrides,
                      max_cells=args.max_cells, max_new_tokens=args.max_new_tokens,
                      workers=args.workers, worker=args.worker, warm_steps=args.warm_steps)
    if args.worker is not None:
        return 0
    print(f"{len(table['entries'])} rows -> {args.out}/table.md, table.json, table.csv, scatter.png, claims.md")
    if table.get("failed"):
        print(f"speechllm study: {len(table['failed'])} cell runs failed, listed in {args.out}/table.md; "
              "rerun the command to try them again", file=sys.stderr)
        return 1
    return 0
