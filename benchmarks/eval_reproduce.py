"""Score the anchors' published model outputs with speechllm and print the official figures beside ours.

    python benchmarks/eval_reproduce.py --mmau CLONE_OF_Sakshi113/MMAU \
        --desta25 CLONE_OF_kehanlu/DeSTA2.5-Audio --speech-ifeval CLONE_OF_kehanlu/Speech-IFEval \
        [--json OUT.json]

Every clone is optional; what is given is scored. For each benchmark it prints the published figure
(the anchor's README), the figure of the anchor's own scorer on its published outputs (MMAU's
``string_match`` imported from the MMAU clone; Speech-IFEval's stored verdicts), speechllm's figure
with the benchmark's default scoring profile, and how many per-item verdicts agree. Nothing is
downloaded and no model runs: only published answers are scored. docs/evaluation.md records the
output.

- MMAU test-mini: DeSTA2.5's ``mmau-test-mini_results.json``, each answer (``model_output``)
  scored by speechllm's ``mmau-official`` profile (and, for comparison, the lenient ``speechllm``
  profile); the official verdict is MMAU's ``string_match`` on DeSTA2.5's ``model_prediction``.
- Speech-IFEval: the DeSTA2 and Llama-3-8B-Instruct outputs under ``outputs/``, scored by the
  ``speech-ifeval`` profile on the benchmark's own items (``data/eval_data``); chain-of-thought
  answers are read through speechllm's parser of the stored GPT-4o verdicts (``eval_response``),
  since the judge itself cannot be rerun offline.
- Dynamic-SUPERB: no per-item model outputs are published by DeSTA2/DeSTA2.5 (their repositories
  hold code and MMAU results only), so there is nothing to score; the script says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechllm.eval.loaders import load_benchmark  # noqa: E402
from speechllm.eval.retention import relative_drop  # noqa: E402
from speechllm.eval.scoring_profiles import aggregate, score_item  # noqa: E402
from speechllm.eval.speech_ifeval import SPLITS, parse_result_verdict  # noqa: E402
from speechllm.eval.suite import speech_ifeval_summary  # noqa: E402

MMAU_RESULTS = "examples/evaluation/MMAU-v05.15.25/results/mmau-test-mini_results.json"
#: Published figures, in percent: DeSTA2.5-Audio's MMAU README (test-mini) and Speech-IFEval's README.
PUBLISHED_MMAU = {"sound": 70.57, "music": 56.29, "speech": 71.17, "total": 66.00}
PUBLISHED_SPEECH_IFEVAL = {
    "DeSTA-ntu--DeSTA2-8B-beta": {"closed_ended": 83.71, "creative_writing": 91.75,
                                  "chain_of_thought": 91.50, "if_rate": 89.23},
    "meta-llama--Meta-Llama-3-8B-Instruct": {"closed_ended": 93.35, "creative_writing": 93.75,
                                             "chain_of_thought": 90.50, "if_rate": 92.53},
}
PUBLISHED_DELTA = -3.57  # DeSTA2 against Llama-3-8B-Instruct
REFERENCE_OF = {"DeSTA-ntu--DeSTA2-8B-beta": "meta-llama--Meta-Llama-3-8B-Instruct"}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _official_string_match(mmau_clone: Path):
    spec = importlib.util.spec_from_file_location("mmau_official_evaluation", mmau_clone / "evaluation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its command line sits under __main__; nothing runs
    return module.string_match


def reproduce_mmau(desta25: Path, mmau: Path | None) -> dict[str, Any]:
    """DeSTA2.5's published MMAU test-mini answers under speechllm's profiles."""
    results = desta25 / MMAU_RESULTS
    rows = {r["id"]: r for r in json.loads(results.read_text(encoding="utf-8"))}
    bench = load_benchmark(f"mmau:{results}")
    official = _official_string_match(mmau) if mmau else None
    out: dict[str, Any] = {"items": len(bench.items), "published": PUBLISHED_MMAU, "profiles": {}}
    for profile in (bench.scoring, "speechllm"):
        scored = [score_item(i, rows[i.id]["model_output"], profile) for i in bench.items]
        cats = aggregate(scored)["by_category"]
        figures = {task: cats[task]["value"] for task in ("sound", "music", "speech")}
        figures["total"] = sum(bool(s["correct"]) for s in scored) / len(scored)
        entry: dict[str, Any] = {"figures": figures}
        if official is not None:
            verdicts = {i.id: bool(official(rows[i.id]["answer"], rows[i.id]["model_prediction"], i.choices))
                        for i in bench.items}
            entry["agree"] = sum(s["correct"] == verdicts[s["id"]] for s in scored)
            entry["disagree_ids"] = [s["id"] for s in scored if s["correct"] != verdicts[s["id"]]]
            entry["official_total"] = sum(verdicts.values()) / len(verdicts)
        out["profiles"][profile] = entry
    return out


def _outputs(clone: Path, model: str, stem: str) -> list[dict[str, Any]]:
    path = clone / "outputs" / model / stem
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def reproduce_speech_ifeval(clone: Path) -> dict[str, Any]:
    """Speech-IFEval's published outputs under speechllm's ``speech-ifeval`` profile."""
    bench = load_benchmark(f"speech-ifeval:{clone}")
    # Outputs are matched to items by (audio, instruction): the published Llama outputs number
    # the closed-ended items from 1, the data from 0.
    items = {}
    for stem, split in SPLITS.items():
        data = [json.loads(x) for x in (clone / "data" / "eval_data" / f"{stem}.jsonl").read_text(
            encoding="utf-8").splitlines() if x.strip()]
        for row, item in zip(data, [i for i in bench.items if i.category == split], strict=True):
            items[(row["audio_filepath"], row["instruction"])] = item
    out: dict[str, Any] = {}
    for model in PUBLISHED_SPEECH_IFEVAL:
        rows, agree, total, stored = [], 0, 0, {}
        for stem, split in SPLITS.items():
            if split == "chain_of_thought":
                judged = _outputs(clone, model, "reports/llm_eval@chain-of-thought.jsonl")
                for r in judged:
                    row = score_item(items[(r["audio_filepath"], r["instruction"])], r["response"], bench.scoring)
                    verdict = parse_result_verdict(r["eval_response"])
                    row["score"] = None if verdict is None else float(verdict)
                    rows.append(row)
                    agree += verdict is r["correct"]
                    total += 1
                stored[split] = sum(bool(r["correct"]) for r in judged) / len(judged)
                continue
            report = _outputs(clone, model, f"reports/rule_eval@{stem}.jsonl.jsonl")
            for r in report:
                row = score_item(items[(r["audio_filepath"], r["instruction"])], r["response"], bench.scoring)
                rows.append(row)
                got = [c["followed"] for c in row["constraints"]]
                agree += sum(a == b for a, b in zip(got, r["follow_instruction_list"], strict=True))
                total += len(got)
            stored[split] = sum(bool(r["follow_all_instructions"]) for r in report) / len(report)
        summary = speech_ifeval_summary(aggregate(rows)["by_category"])
        out[model] = {"ours": summary, "stored": {**stored, "if_rate": speech_ifeval_summary(
            {k: {"value": v} for k, v in stored.items()})["if_rate"]},
            "published": PUBLISHED_SPEECH_IFEVAL[model], "verdicts_agree": agree, "verdicts": total}
    for model, reference in REFERENCE_OF.items():
        out[model]["relative_drop"] = {
            "ours": relative_drop(out[model]["ours"]["if_rate"], out[reference]["ours"]["if_rate"]),
            "from_published_split_rates": relative_drop(
                sum(PUBLISHED_SPEECH_IFEVAL[model][s] for s in SPLITS.values()) / 3,
                sum(PUBLISHED_SPEECH_IFEVAL[reference][s] for s in SPLITS.values()) / 3),
            "published": PUBLISHED_DELTA / 100}
    return out


def print_mmau(result: dict[str, Any]) -> None:
    print(f"\nMMAU test-mini, DeSTA2.5-Audio's published answers ({result['items']} items)")
    print(f"{'profile':18s} {'sound':>7s} {'music':>7s} {'speech':>7s} {'total':>7s}  verdicts = official")
    pub = result["published"]
    print(f"{'published':18s} {pub['sound']:7.2f} {pub['music']:7.2f} {pub['speech']:7.2f} {pub['total']:7.2f}")
    for name, entry in result["profiles"].items():
        f = entry["figures"]
        agree = f"{entry['agree']}/{result['items']}" if "agree" in entry else "(no MMAU clone)"
        print(f"{name:18s} {_pct(f['sound']):>7s} {_pct(f['music']):>7s} {_pct(f['speech']):>7s} "
              f"{_pct(f['total']):>7s}  {agree}")


def print_speech_ifeval(result: dict[str, Any]) -> None:
    print("\nSpeech-IFEval, published outputs (following rates, %)")
    print(f"{'model':38s} {'figure':10s} {'closed':>7s} {'creative':>8s} {'CoT':>7s} {'IF-rate':>8s}")
    for model, entry in result.items():
        for label, fig in (("published", {k: v / 100 for k, v in entry["published"].items()}),
                           ("stored", entry["stored"]), ("speechllm", entry["ours"]["split_rates"]
                                                         | {"if_rate": entry["ours"]["if_rate"]})):
            print(f"{model:38s} {label:10s} {_pct(fig['closed_ended']):>7s} {_pct(fig['creative_writing']):>8s} "
                  f"{_pct(fig['chain_of_thought']):>7s} {_pct(fig['if_rate']):>8s}")
        print(f"{'':38s} verdicts equal to the stored ones: {entry['verdicts_agree']}/{entry['verdicts']}")
        if "relative_drop" in entry:
            d = entry["relative_drop"]
            print(f"{'':38s} relative drop: published {_pct(d['published'])}, from the published split "
                  f"rates {_pct(d['from_published_split_rates'])}, speechllm on the stored outputs {_pct(d['ours'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mmau", type=Path, help="clone of github.com/Sakshi113/MMAU (the official scorer)")
    ap.add_argument("--desta25", type=Path, help="clone of github.com/kehanlu/DeSTA2.5-Audio (published MMAU answers)")
    ap.add_argument("--speech-ifeval", type=Path, help="clone of github.com/kehanlu/Speech-IFEval")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if not (args.desta25 or args.speech_ifeval):
        ap.error("give at least --desta25 or --speech-ifeval")
    result: dict[str, Any] = {}
    if args.desta25:
        result["mmau"] = reproduce_mmau(args.desta25, args.mmau)
        print_mmau(result["mmau"])
    if args.speech_ifeval:
        result["speech_ifeval"] = reproduce_speech_ifeval(args.speech_ifeval)
        print_speech_ifeval(result["speech_ifeval"])
    print("\nDynamic-SUPERB: no per-item outputs of DeSTA2 / DeSTA2.5 are published; nothing to score.")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
