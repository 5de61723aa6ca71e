"""Evaluation: benchmark loaders, scorers, constraint checkers, judges, the retention suite and
reports. ``speechllm eval`` is :func:`evaluate`; docs/evaluation.md describes every part."""

from speechllm.eval.answer_match import desta_label_match, is_refusal, parse_choice, word_errors
from speechllm.eval.bench_run import run_benchmark
from speechllm.eval.builtin import build_builtin_items, render_seed_description, write_builtin
from speechllm.eval.constraints import check_constraint, list_constraints, split_sentences
from speechllm.eval.items import KINDS, BenchItem, BenchmarkError
from speechllm.eval.judge import HFJudge, JudgeError, OpenAIJudge, judge_answers, make_judge
from speechllm.eval.loaders import Benchmark, known_benchmarks, load_benchmark
from speechllm.eval.predictors import (
    Predictor,
    Request,
    SpeechLLMPredictor,
    TextLLMPredictor,
    build_prompt,
    load_predictor,
)
from speechllm.eval.report import compare_runs, write_report
from speechllm.eval.retention import retention_metrics, speech_text_gap, teacher_forced_metrics
from speechllm.eval.scoring_profiles import aggregate, score_item
from speechllm.eval.suite import EvalOptions, evaluate

__all__ = [
    "KINDS", "BenchItem", "Benchmark", "BenchmarkError", "EvalOptions", "HFJudge", "JudgeError",
    "OpenAIJudge", "Predictor", "Request", "SpeechLLMPredictor", "TextLLMPredictor", "aggregate",
    "build_builtin_items", "build_prompt", "check_constraint", "compare_runs", "desta_label_match",
    "evaluate", "is_refusal", "judge_answers", "known_benchmarks", "list_constraints",
    "load_benchmark", "load_predictor", "make_judge", "parse_choice", "render_seed_description",
    "retention_metrics", "run_benchmark", "score_item", "speech_text_gap", "split_sentences",
    "teacher_forced_metrics", "word_errors", "write_builtin", "write_report",
]
