"""``evaluate()``: the function behind ``speechllm eval`` (benchmarks, retention, report)."""

from __future__ import annotations

import logging
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechllm.eval.items import BenchmarkError
from speechllm.eval.judge import Judge, judge_prompts, make_judge
from speechllm.eval.loaders import load_benchmark, parse_bench_spec
from speechllm.eval.normalize import normalizer_info
from speechllm.eval.predictors import (
    Predictor,
    SpeechLLMPredictor,
    TextLLMPredictor,
    load_causal_lm,
    load_predictor,
)
from speechllm.eval.report import write_report
from speechllm.llm_runtime import dtype_name_of

log = logging.getLogger(__name__)


@dataclass
class EvalOptions:
    """Everything ``evaluate`` needs besides the model and the benchmarks."""

    out_dir: str
    base: str | None = None  # base LLM: retention reference and text side of the speech-vs-text gap
    judge: str | None = None  # hf model ref or http(s) URL
    judge_model: str | None = None  # served model name at a judge URL
    judge_swap: bool = False
    audio_root: str | None = None
    batch_size: int = 8
    max_new_tokens: int = 128
    limit: int | None = None
    resume: bool = True
    seed: int = 0
    retention_prompts: str | None = None
    harmful_prompts: str | None = None
    gap_bench: str | None = None
    progress: bool = True
    #: Scoring profile per benchmark name (``"*"``: every benchmark); default: each benchmark's
    #: official profile (:data:`speechllm.eval.loaders.DEFAULT_SCORING`).
    scoring: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def collect_versions() -> dict[str, Any]:
    """Versions that change numbers: Python, key packages, the normalisers in use."""
    import importlib.metadata as md

    from speechllm import __version__

    out: dict[str, Any] = {"speechllm": __version__, "python": platform.python_version()}
    for dist in ("torch", "transformers", "jiwer", "whisper-normalizer", "matplotlib"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    out["normalizers"] = normalizer_info()
    return out


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate(model: str, benches: Sequence[str], options: EvalOptions, *,
             predictor: Predictor | None = None) -> dict[str, Any]:
    """Run every benchmark spec (and the retention suite when ``retention`` is among them) for
    ``model``; write the report into ``options.out_dir`` and return it.

    Benchmarks are loaded and the judge is checked before any model is loaded, so bad input
    fails in seconds.
    """
    set_seed(options.seed)
    specs = [parse_bench_spec(s) for s in benches]
    want_retention = any(name == "retention" for name, _ in specs)
    unknown = sorted(set(options.scoring) - {n for n, _ in specs} - {"*"})
    if unknown:
        raise BenchmarkError(f"--scoring names {', '.join(unknown)}, which no --bench loads")
    loaded = [load_benchmark(s, audio_root=options.audio_root, scoring=_profile_for(n, options))
              for s, (n, _) in zip(benches, specs, strict=True) if n != "retention"]
    names = [b.name for b in loaded]
    for b in loaded:  # two specs of one loader get distinct sections
        if names.count(b.name) > 1:
            b.name = f"{b.name}-{Path(b.source).stem}"
    gap_bench = (load_benchmark(options.gap_bench, audio_root=options.audio_root,
                                scoring=_profile_for(parse_bench_spec(options.gap_bench)[0], options))
                 if options.gap_bench else None)
    for rname, path in specs:
        if rname == "retention" and path:
            options.retention_prompts = options.retention_prompts or path
    judge: Judge | None = None
    judged = [*loaded, *([gap_bench] if gap_bench else [])]
    if options.judge and any(i.kind == "open" for b in judged for i in b.items):
        judge = make_judge(options.judge, model=options.judge_model, batch_size=options.batch_size)
    elif any(i.kind == "open" for b in judged for i in b.items):
        log.warning("open-ended items present but no --judge: they are answered but not scored")
    if (want_retention or gap_bench) and not options.base:
        raise BenchmarkError("the retention suite and the speech-vs-text gap need --base (the base LLM)")

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    pred = predictor or load_predictor(model, max_new_tokens=options.max_new_tokens, batch_size=options.batch_size)
    report: dict[str, Any] = {
        "run": {"model": pred.describe(), "benchmarks": list(benches), "seed": options.seed,
                "started": started, "base": options.base, "batch_size": options.batch_size,
                "max_new_tokens": options.max_new_tokens, "limit": options.limit,
                "judge_prompts": judge_prompts() if judge is not None else None,
                "versions": collect_versions()},
        "benchmarks": {},
    }
    from speechllm.eval.bench_run import run_benchmark

    for bench in loaded:
        section = run_benchmark(
            pred, bench, options.out_dir, batch_size=options.batch_size, judge=judge,
            judge_swap=options.judge_swap, resume=options.resume, limit=options.limit,
            progress=options.progress)
        report["benchmarks"][bench.name] = {**section, **scoring_section(bench, section)}
    if want_retention:
        report["retention"] = run_retention(pred, options)
    if gap_bench is not None:
        report["speech_text_gap"] = run_speech_text_gap(pred, gap_bench, options, judge=judge)
    report["run"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_report(options.out_dir, report)
    return report


def _profile_for(name: str, options: EvalOptions) -> str | None:
    return options.scoring.get(name) or options.scoring.get("*")


def scoring_section(bench, section: dict[str, Any]) -> dict[str, Any]:
    """What the report says about how a benchmark was scored: the profile (``scoring``) and, for
    Speech-IFEval, its split rates and IF-rate (``speech_ifeval``)."""
    from speechllm.eval.scoring_profiles import get_profile

    profile = get_profile(bench.scoring)
    out: dict[str, Any] = {"scoring": profile.name, "scoring_rule": profile.description}
    if profile.constraint_rules == "speech-ifeval":
        out["speech_ifeval"] = speech_ifeval_summary(section.get("by_category") or {})
    return out


def speech_ifeval_summary(categories: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Speech-IFEval's figures from a report's categories: each split's following rate
    (closed-ended and creative writing: prompt-level, every constraint followed; chain-of-thought:
    the judge's share of yes) and the IF-rate, their mean (None unless all three were scored)."""
    from speechllm.eval.speech_ifeval import SPLITS, if_rate

    rates = {split: (categories.get(split) or {}).get("value") for split in SPLITS.values()}
    return {"split_rates": rates, "if_rate": if_rate(rates)}


def _llm_dtype(pred: Predictor) -> str:
    """The precision of the evaluated model's LLM (fp32 for a predictor that holds none here)."""
    if isinstance(pred, (TextLLMPredictor, SpeechLLMPredictor)):
        return dtype_name_of(_tuned_text_lm(pred)[0])
    return "fp32"


def _tuned_text_lm(pred: Predictor):
    if isinstance(pred, TextLLMPredictor):
        return pred.model, pred.tokenizer
    if isinstance(pred, SpeechLLMPredictor):
        return pred.text_lm()
    raise BenchmarkError(f"the retention suite cannot reach the text LM of {type(pred).__name__}")


def run_retention(pred: Predictor, options: EvalOptions) -> dict[str, Any]:
    """Retention metrics of the evaluated model's text path against ``options.base``."""
    from speechllm.eval.retention import (
        load_harmful_prompts,
        load_retention_prompts,
        retention_metrics,
    )

    prompts = load_retention_prompts(options.retention_prompts)
    harmful = load_harmful_prompts(options.harmful_prompts)
    tuned, _ = _tuned_text_lm(pred)
    # Load the base in the tuned model's dtype (fp16 included): a bf16 or fp16 copy against an
    # fp32 one differs by rounding alone, which would read as forgetting.
    dtype = dtype_name_of(tuned)
    base, tokenizer = load_causal_lm(options.base, dtype=dtype)
    out = retention_metrics(base, tuned, tokenizer, prompts=prompts[: options.limit or None],
                            harmful=harmful[: options.limit or None],
                            max_new_tokens=min(options.max_new_tokens, 64), batch_size=options.batch_size)
    out["dtype"] = dtype
    out["prompt_source"] = options.retention_prompts or "built-in"
    out["harmful_source"] = options.harmful_prompts or "built-in"
    return out


def run_speech_text_gap(pred: Predictor, bench, options: EvalOptions, *, judge: Judge | None = None) -> dict[str, Any]:
    """The same items answered by the evaluated model (with audio) and by the base LLM reading
    each item's text stand-in (Speech-IFEval's text reference). For Speech-IFEval the relative
    drop of the IF-rate (its forgetting rate Δ) is reported too."""
    from speechllm.eval.bench_run import run_benchmark
    from speechllm.eval.loaders import Benchmark
    from speechllm.eval.retention import speech_text_gap
    from speechllm.utils.jsonl import read_jsonl

    # The text side wraps descriptions exactly as the evaluated model's layout wraps audio.
    layout_config = pred.model.config if isinstance(pred, SpeechLLMPredictor) else getattr(pred, "layout_config", None)
    # ... and reads in the evaluated model's LLM dtype: the gap should measure hearing against
    # reading, not bf16 against fp32.
    text_pred = TextLLMPredictor(options.base, max_new_tokens=options.max_new_tokens, batch_size=options.batch_size,
                                 layout_config=layout_config, dtype=_llm_dtype(pred))
    out = Path(options.out_dir) / "speech_text_gap"
    sides, sections = {}, {}
    for side, p in (("speech", pred), ("text", text_pred)):
        b = Benchmark(name=side, source=bench.source, items=bench.items, breakdown_keys=bench.breakdown_keys,
                      scoring=bench.scoring)
        sections[side] = run_benchmark(p, b, out, batch_size=options.batch_size, judge=judge,
                                       judge_swap=options.judge_swap, resume=options.resume,
                                       limit=options.limit, progress=options.progress)
        sides[side] = read_jsonl(out / side / "scores.jsonl")
    gap = speech_text_gap(sides["speech"], sides["text"])
    gap["benchmark"] = bench.source
    gap["text_model"] = options.base
    gap["scoring"] = bench.scoring
    if scoring_section(bench, sections["speech"]).get("speech_ifeval") is not None:
        from speechllm.eval.retention import relative_drop

        speech = speech_ifeval_summary(sections["speech"].get("by_category") or {})
        text = speech_ifeval_summary(sections["text"].get("by_category") or {})
        drop = relative_drop(speech["if_rate"], text["if_rate"])
        gap["speech_ifeval"] = {"speech": speech, "text": text, "relative_drop": drop}
        if drop is not None:
            # Speech-IFEval's Δ is the drop of the mean of its three split rates, not of the
            # rate pooled over every instruction item: that one stays as ..._pooled.
            gap["if_relative_drop_pooled"] = gap["if_relative_drop"]
            gap["if_relative_drop"] = drop
    return gap
