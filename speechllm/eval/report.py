"""Reports: ``report.json`` (everything), ``report.md`` (tables), PNG plots (matplotlib, Agg).

``compare_runs`` puts several run folders side by side and draws the learning-vs-forgetting
scatter: each run's target score (see :mod:`speechllm.eval.scoring_profiles`) against its KL-to-base.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speechllm.eval.items import BenchmarkError
from speechllm.utils.fs import atomic_write_text

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_NOTE_KEYS = (("unparsed", "unparsed"), ("hedged", "hedged"), ("unparsable_verdicts", "unparsable verdicts"),
              ("unscored", "unscored"), ("unsupported_constraints", "unsupported constraints"),
              ("cer", "CER"), ("instruction_accuracy", "instruction-level"),
              ("empty_labels", "labels empty after normalising (any answer credited)"))


def _notes(metrics: dict[str, Any]) -> str:
    parts = [f"{label} {_fmt(metrics[k])}" for k, label in _NOTE_KEYS if metrics.get(k)]
    return "; ".join(parts) or ""


def _interval(ci: Sequence[float] | None) -> str:
    return f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"


def _majority(metrics: dict[str, Any]) -> str:
    if metrics.get("majority") is None:
        return "-"
    return f"{metrics['majority']:.4f} ({metrics.get('majority_answer')})"


def render_markdown(report: dict[str, Any]) -> str:
    """The Markdown view of a report."""
    run = report.get("run", {})
    out = [f"# Evaluation: {run.get('model', {}).get('model', '?')}", ""]
    out.append(_table(["key", "value"], [[k, json.dumps(v) if isinstance(v, (dict, list)) else v]
                                          for k, v in run.items() if k != "versions"]))
    out.append("")
    for name, bench in report.get("benchmarks", {}).items():
        out += [f"## {name}", "", f"source: `{bench.get('source')}`; items {bench.get('items')}, "
                f"answered {bench.get('answered')}; target score {_fmt(bench.get('target_score'))}", ""]
        if bench.get("scoring"):
            out += [f"scoring: `{bench['scoring']}`: {bench.get('scoring_rule', '')}", ""]
        sif = bench.get("speech_ifeval")
        if sif:
            rates = ", ".join(f"{k} {_fmt(v)}" for k, v in (sif.get("split_rates") or {}).items())
            out += [f"Speech-IFEval: {rates}; IF-rate {_fmt(sif.get('if_rate'))}", ""]
        for reason, info in (bench.get("skipped") or {}).items():
            line = f"- skipped ({reason}): {info['count']} items, e.g. {', '.join(info['ids'][:5])}"
            if info.get("example_error"):
                line += f" (first error: {info['example_error']})"
            out.append(line)
        if bench.get("skipped"):
            out.append(f"- every skipped item, with its error: `{name}/skipped.jsonl`")
        if bench.get("judge"):
            out.append(f"- judge: `{json.dumps(bench['judge'])}` (swap: {bench.get('judge_swap')})")
        out.append("")
        cats = bench.get("by_category", {})
        out.append(_table(["category", "kind", "n", "metric", "value", "95% interval", "chance", "majority", "notes"],
                          [[c, v["kind"], v["n"], v["metric"], v["value"], _interval(v.get("ci95")),
                            v.get("chance"), _majority(v), _notes(v)] for c, v in cats.items()]))
        out.append("")
        for key, groups in (bench.get("breakdowns") or {}).items():
            out.append(_table([key, "n", "accuracy"], [[g, v["n"], v["accuracy"]] for g, v in groups.items()]))
            out.append("")
    ret = report.get("retention")
    if ret:
        out += ["## Retention", ""]
        flat = [[k, v] for k, v in ret.items() if not isinstance(v, (dict, list))]
        inv = ret.get("text_path_invariance") or {}
        flat += [[f"text_path_invariance.{k}", v] for k, v in inv.items()]
        for side in ("refusal_base", "refusal_tuned"):
            if isinstance(ret.get(side), dict):
                flat.append([f"{side}.refusal_rate", ret[side]["refusal_rate"]])
        out.append(_table(["metric", "value"], flat))
        out.append("")
    gap = report.get("speech_text_gap")
    if gap:
        out += ["## Speech-vs-text gap", "", _table(["metric", "value"], [[k, v] for k, v in gap.items()]), ""]
    versions = run.get("versions")
    if versions:
        out += ["## Versions", "", _table(["package", "version"], [[k, v] for k, v in versions.items()]), ""]
    return "\n".join(out)


def plot_accuracy_per_task(report: dict[str, Any], path: Path) -> Path | None:
    """Bar chart of every category's primary metric on [0, 1] (higher better), with its 95%
    interval, the chance level (dashed) and the majority-answer baseline (dotted) where known.
    A WER above 1 (answers that loop to the token limit) is drawn at 0 and labelled with its
    value, not hidden."""
    from speechllm.eval.scoring_profiles import normalized_primary

    bars: list[dict[str, Any]] = []
    for name, bench in report.get("benchmarks", {}).items():
        for cat, v in bench.get("by_category", {}).items():
            norm = normalized_primary(v["kind"], v["value"], v.get("metric"))
            if norm is None:
                continue
            ci = v.get("ci95")
            if ci is not None:
                ends = sorted(normalized_primary(v["kind"], x, v.get("metric")) for x in ci)
                ci = [min(ends[0], norm), max(ends[1], norm)]
            if v["kind"] == "asr":
                metric, text = "1-WER", f"WER {v['value']:.2f}"
            else:
                metric = "judge/10" if v["kind"] == "open" and v["metric"] != "judge_rate" else v["metric"]
                text = f"{norm:.2f}"
            bars.append({"label": f"{name}:{cat}\n({metric}, n={v['n']})", "value": norm, "text": text,
                         "ci": ci, "chance": v.get("chance"), "majority": v.get("majority")})
    if not bars:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(bars) + 1.5), 4.2))
    xs = list(range(len(bars)))
    values = [b["value"] for b in bars]
    errors = [[b["value"] - b["ci"][0] if b["ci"] else 0.0 for b in bars],
              [b["ci"][1] - b["value"] if b["ci"] else 0.0 for b in bars]]
    drawn = ax.bar(xs, values, color="#4c72b0", yerr=errors, capsize=3, ecolor="#333333",
                   label="score (95% interval)")
    ax.bar_label(drawn, labels=[b["text"] for b in bars], fontsize=7, padding=2)
    for kind, style, color in (("chance", "--", "#c44e52"), ("majority", ":", "#55a868")):
        shown = False
        for x, b in zip(xs, bars, strict=True):
            if b[kind] is not None:
                ax.hlines(b[kind], x - 0.45, x + 0.45, colors=color, linestyles=style, linewidth=1.6,
                          label=None if shown else f"{kind} baseline")
                shown = True
    ax.set_xticks(xs, [b["label"] for b in bars], rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("score (higher is better)")
    ax.set_title("Score per task")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(out_dir: str | Path, report: dict[str, Any]) -> dict[str, Path]:
    """Write report.json, report.md and plots/score_per_task.png into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / REPORT_JSON, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / REPORT_MD, render_markdown(report) + "\n")
    written = {"json": out / REPORT_JSON, "markdown": out / REPORT_MD}
    plot = plot_accuracy_per_task(report, out / "plots" / "score_per_task.png")
    if plot is not None:
        written["score_per_task"] = plot
    return written


def load_report(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / REPORT_JSON
    if not path.is_file():
        raise BenchmarkError(f"{run_dir}: no {REPORT_JSON} (run `speechllm eval` into that folder first)")
    return json.loads(path.read_text(encoding="utf-8"))


def run_summary(report: dict[str, Any]) -> dict[str, Any]:
    """One row per run: target score (mean over benchmarks), KL-to-base, dNLL, top-1, gap."""
    scores = [b.get("target_score") for b in report.get("benchmarks", {}).values()]
    scores = [s for s in scores if s is not None]
    ret = report.get("retention") or {}
    gap = report.get("speech_text_gap") or {}
    return {
        "target_score": sum(scores) / len(scores) if scores else None,
        "kl_to_base": ret.get("kl_to_base"),
        "delta_nll": ret.get("delta_nll"),
        "top1_agreement": ret.get("top1_agreement"),
        "refusal_tuned": (ret.get("refusal_tuned") or {}).get("refusal_rate"),
        "if_relative_drop": gap.get("if_relative_drop"),
    }


def plot_learning_vs_forgetting(points: Sequence[tuple[str, float, float]], path: Path) -> Path | None:
    """Scatter of (run, KL-to-base, target score); None when no run has both."""
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 4.0))
    for name, kl, score in points:
        ax.scatter([kl], [score], s=40)
        ax.annotate(name, (kl, score), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("KL to base (nats/token, lower = less forgetting)")
    ax.set_ylabel("target score (higher = more learning)")
    ax.set_title("Learning vs forgetting")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None) -> dict[str, Any]:
    """Side-by-side table of runs (per-benchmark target scores and retention figures); with
    ``out_dir`` also compare.json, compare.md and plots/learning_vs_forgetting.png."""
    runs = {}
    bench_names: list[str] = []
    for d in run_dirs:
        report = load_report(d)
        name = Path(d).name
        if name in runs:
            name = str(d)
        benches = {b: v.get("target_score") for b, v in report.get("benchmarks", {}).items()}
        bench_names += [b for b in benches if b not in bench_names]
        runs[name] = {"dir": str(d), "benchmarks": benches, **run_summary(report)}
    result = {"runs": runs}
    cols = ["target_score", "kl_to_base", "delta_nll", "top1_agreement", "refusal_tuned", "if_relative_drop"]
    md = _table(["run", *bench_names, *cols],
                [[n, *[r["benchmarks"].get(b) for b in bench_names], *[r[c] for c in cols]]
                 for n, r in runs.items()])
    result["markdown"] = md
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "compare.json", json.dumps(runs, indent=2) + "\n")
        atomic_write_text(out / "compare.md", "# Runs compared\n\n" + md + "\n")
        points = [(n, r["kl_to_base"], r["target_score"]) for n, r in runs.items()
                  if r["kl_to_base"] is not None and r["target_score"] is not None]
        plot = plot_learning_vs_forgetting(points, out / "plots" / "learning_vs_forgetting.png")
        result["plot"] = str(plot) if plot else None
    return result
