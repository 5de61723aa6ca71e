"""The parts that run models: retention metrics, the judge, an end-to-end evaluation with a tiny
random LLM (report, plots, resume, compare) and the CLI."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest
import torch

from speechllm.eval.bench_run import split_runnable
from speechllm.eval.items import BenchItem, BenchmarkError
from speechllm.eval.judge import (
    HFJudge,
    JudgeError,
    OpenAIJudge,
    judge_answers,
    parse_pair,
    parse_single,
)
from speechllm.eval.predictors import (
    Request,
    TextLLMPredictor,
    load_causal_lm,
    text_reference_message,
)
from speechllm.eval.report import compare_runs
from speechllm.eval.retention import (
    base_answers,
    load_harmful_prompts,
    load_retention_prompts,
    relative_drop,
    speech_text_gap,
    teacher_forced_metrics,
    text_path_invariance,
)
from speechllm.eval.suite import EvalOptions, evaluate
from speechllm.testing.net import free_port

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_pair(tiny_llm_dir):
    base, tok = load_causal_lm(str(tiny_llm_dir))
    same, _ = load_causal_lm(str(tiny_llm_dir))
    return base, same, tok


def test_builtin_prompt_sets():
    assert len(load_retention_prompts()) >= 30
    assert len(load_harmful_prompts()) >= 8


def test_kl_zero_for_identical_and_positive_after_perturbation(tiny_llm_dir, tiny_pair):
    base, same, tok = tiny_pair
    prompts = load_retention_prompts()[:4]
    prompt_ids, answers = base_answers(base, tok, prompts, max_new_tokens=8)
    assert all(len(a) > 0 for a in answers)
    m = teacher_forced_metrics(base, same, prompt_ids, answers)
    assert m["kl_to_base"] == 0.0 and m["delta_nll"] == 0.0 and m["top1_agreement"] == 1.0
    assert m["tokens"] == sum(len(a) for a in answers)
    assert text_path_invariance(base, same, prompt_ids)["identical"] is True

    tuned, _ = load_causal_lm(str(tiny_llm_dir))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in tuned.model.layers[0].mlp.parameters():
            p.add_(0.5 * torch.randn_like(p))
    m2 = teacher_forced_metrics(base, tuned, prompt_ids, answers)
    assert m2["kl_to_base"] > 0
    assert m2["delta_nll"] != 0
    inv = text_path_invariance(base, tuned, prompt_ids)
    assert inv["identical"] is False and inv["max_abs_logit_diff"] > 0


def test_speech_text_gap_and_relative_drop():
    assert relative_drop(0.5, 0.8) == pytest.approx(-0.375)
    assert relative_drop(0.5, 0.0) is None
    speech = [{"id": "a", "kind": "instruction", "correct": True},
              {"id": "b", "kind": "instruction", "correct": False},
              {"id": "c", "kind": "multiple_choice", "correct": True, "picked": "A"}]
    text = [{"id": "a", "kind": "instruction", "correct": True},
            {"id": "b", "kind": "instruction", "correct": True},
            {"id": "c", "kind": "multiple_choice", "correct": False, "picked": "B"}]
    gap = speech_text_gap(speech, text)
    assert gap["if_rate_speech"] == 0.5 and gap["if_rate_text"] == 1.0
    assert gap["if_relative_drop"] == pytest.approx(-0.5)
    assert gap["agreement"] == pytest.approx(1 / 3)


def test_judge_parsing():
    assert parse_pair("8 6") == (8.0, 6.0)
    assert parse_pair("Scores:\nAssistant 1: 7.5, Assistant 2: 10") == (7.5, 10.0)
    assert parse_pair("12 3") is None
    assert parse_pair("great answer") is None
    assert parse_single("Score: 9") == 9.0
    assert parse_single("0") is None


def test_tiny_local_judge_output_counted_unparsable(tiny_llm_dir):
    judge = HFJudge(str(tiny_llm_dir), max_new_tokens=6)
    verdicts = judge_answers(judge, ["Who speaks?", "Hi?"], ["a woman", "hello"], ["a woman", None],
                             ["female voice", None], swap=True)
    # A random tiny model writes no scores: every call is unparsable and counted, none crash.
    assert [len(v.raw) for v in verdicts] == [2, 1]
    assert [(v.score, v.unparsable) for v in verdicts] == [(None, 2), (None, 1)]
    assert judge.describe()["model"] == str(tiny_llm_dir)


def test_openai_judge_unreachable_fails_before_run():
    judge = OpenAIJudge(f"http://127.0.0.1:{free_port()}/v1", "m", timeout=2)
    with pytest.raises(JudgeError, match="unreachable"):
        judge.check()


def test_openai_judge_on_loopback_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802
            self._send({"data": [{"id": "m"}]})

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            swapped = "Assistant 1's Answer]\nmine" in body["messages"][0]["content"]
            self._send({"choices": [{"message": {"content": "6 9" if swapped else "9 7"}}]})

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        judge = OpenAIJudge(f"http://127.0.0.1:{server.server_port}/v1", "m", timeout=5)
        judge.check()
        (v,) = judge_answers(judge, ["q"], ["mine"], ["ref"], swap=True)
        assert v.score == pytest.approx((7 + 6) / 2) and v.unparsable == 0
    finally:
        server.shutdown()
        server.server_close()


def test_text_reference_message():
    r = Request(id="x", text="Gender?", audios=["a.wav"], audio_text="(Gender: Female)")
    # The layout target generation uses: the description where the audio span stands.
    assert text_reference_message(r) == "<start_audio>(Gender: Female)<end_audio>\nGender?"
    assert text_reference_message(Request(id="y", text="", audios=["a.wav"], audio_text="Spoken q")) == \
        "<start_audio>Spoken q<end_audio>"
    assert text_reference_message(Request(id="z", text="Hi", audios=[], audio_text=None)) == "Hi"


def test_split_runnable_counts_missing_audio(tmp_path):
    items = [BenchItem(id="a", kind="label", instruction="q", reference="x", audios=[str(tmp_path / "no.wav")]),
             BenchItem(id="b", kind="label", instruction="q", reference="x")]
    runnable, skipped = split_runnable(items, needs_audio=True)
    assert [i.id for i in runnable] == ["b"]
    assert skipped["missing_audio"] == [{"id": "a", "paths": [str(tmp_path / "no.wav")]}]
    runnable, skipped = split_runnable(items, needs_audio=False)
    assert [i.id for i in runnable] == ["b"] and skipped["no_text_stand_in"] == [{"id": "a"}]


def _bench_file(tmp_path: Path) -> Path:
    rows = [
        {"id": "g1", "kind": "multiple_choice", "instruction": "What is the gender of the speaker?",
         "audios": ["x.wav"], "audio_text": "(Gender: female)", "reference": "female",
         "choices": ["male", "female"], "category": "gender"},
        {"id": "r1", "kind": "label", "instruction": "How fast? slow, normal or fast.", "audios": ["x.wav"],
         "audio_text": "(Speaking speed: fast)", "reference": "fast", "category": "speaking_rate"},
        {"id": "t1", "kind": "asr", "instruction": "Transcribe.", "audios": ["x.wav"],
         "audio_text": '"the birch canoe"', "reference": "the birch canoe", "category": "transcription"},
        {"id": "c1", "kind": "instruction", "instruction": "Describe it in lower case.", "audios": ["x.wav"],
         "audio_text": "(Gender: female)", "category": "constraints",
         "constraints": [{"id": "change_case:english_lowercase", "kwargs": {}}]},
        {"id": "o1", "kind": "open", "instruction": "What do you hear?", "audios": ["x.wav"],
         "audio_text": "(Gender: female)", "reference": "A woman speaking.", "category": "chat"},
        {"id": "n1", "kind": "label", "instruction": "Emotion?", "audios": ["x.wav"], "reference": "happy",
         "category": "emotion"},  # no text stand-in: skipped for a text model, and counted
    ]
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_evaluate_end_to_end_resume_report_and_compare(tmp_path, tiny_llm_dir):
    bench = _bench_file(tmp_path)
    model = str(tiny_llm_dir)
    predictor = TextLLMPredictor(model, max_new_tokens=8)
    opts = EvalOptions(out_dir=str(tmp_path / "run1"), base=model, judge=model, judge_swap=True,
                       max_new_tokens=8, progress=False)
    report = evaluate(model, [f"jsonl:{bench}", "retention"], opts, predictor=predictor)
    section = report["benchmarks"]["jsonl"]
    assert section["items"] == 6 and section["answered"] == 5
    assert section["skipped"]["no_text_stand_in"]["ids"] == ["n1"]
    assert set(section["by_category"]) == {"gender", "speaking_rate", "transcription", "constraints", "chat"}
    chat = section["by_category"]["chat"]
    # The tiny judge writes no score: both (swapped) verdicts are counted unparsable, not crashed.
    assert (chat["n"], chat["scored"], chat["unparsable_verdicts"], chat["value"]) == (1, 0, 2, None)
    assert report["retention"]["kl_to_base"] == 0.0
    assert report["retention"]["text_path_invariance"]["identical"] is True
    assert report["run"]["versions"]["normalizers"]["english"]
    assert report["run"]["seed"] == 0 and report["run"]["judge_prompts"]["pairwise"]

    run1 = tmp_path / "run1"
    assert json.loads((run1 / "report.json").read_text())["benchmarks"]["jsonl"]["answered"] == 5
    assert "| gender | multiple_choice |" in (run1 / "report.md").read_text()
    assert preds_have_model_input(run1)
    png = (run1 / "plots" / "score_per_task.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 2000
    preds = [json.loads(line) for line in (run1 / "jsonl" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in preds) == ["c1", "g1", "o1", "r1", "t1"]
    # Each answer sits beside its reference (and options), so predictions.jsonl reads alone.
    by_id = {p["id"]: p for p in preds}
    assert by_id["g1"]["reference"] == "female" and by_id["g1"]["choices"] == ["male", "female"]
    assert by_id["t1"]["reference"] == "the birch canoe" and by_id["t1"]["category"] == "transcription"
    # The table gives n, the 95% interval and the baselines (one item: the interval spans most of [0, 1]).
    md = (run1 / "report.md").read_text()
    assert "| category | kind | n | metric | value | 95% interval | chance | majority | notes |" in md
    gender = section["by_category"]["gender"]
    assert gender["chance"] == 0.5 and gender["majority"] == 1.0 and gender["majority_answer"] == "female"
    assert "| 0.5000 | 1.0000 (female) |" in md

    # Resume: a second run into the same folder answers nothing again and reproduces the scores.
    again = evaluate(model, [f"jsonl:{bench}"], EvalOptions(out_dir=str(run1), max_new_tokens=8, progress=False),
                     predictor=predictor)
    assert len((run1 / "jsonl" / "predictions.jsonl").read_text().splitlines()) == 5
    assert again["benchmarks"]["jsonl"]["by_category"]["gender"] == section["by_category"]["gender"]

    # Another model may not resume these predictions.
    other = TextLLMPredictor(model, max_new_tokens=9)
    with pytest.raises(BenchmarkError, match="written by another model"):
        evaluate(model, [f"jsonl:{bench}"], EvalOptions(out_dir=str(run1), max_new_tokens=9, progress=False),
                 predictor=other)

    # A second run with retention for the comparison.
    run2 = tmp_path / "run2"
    evaluate(model, [f"jsonl:{bench}", "retention"],
             EvalOptions(out_dir=str(run2), base=model, max_new_tokens=8, limit=3, progress=False),
             predictor=predictor)
    result = compare_runs([run1, run2], tmp_path / "cmp")
    assert set(result["runs"]) == {"run1", "run2"}
    assert "| run1 |" in (tmp_path / "cmp" / "compare.md").read_text()
    scatter = (tmp_path / "cmp" / "plots" / "learning_vs_forgetting.png").read_bytes()
    assert scatter.startswith(PNG_MAGIC) and len(scatter) > 2000


def preds_have_model_input(run: Path) -> bool:
    rows = [json.loads(line) for line in (run / "jsonl" / "predictions.jsonl").read_text().splitlines()]
    g1 = next(r for r in rows if r["id"] == "g1")
    return g1["model_input"].startswith("<start_audio>(Gender: female)<end_audio>\nWhat is the gender") and \
        g1["prompt"].startswith("What is the gender")


def test_cli_errors_and_build_builtin(tmp_path, capsys):
    from speechllm.cli import main

    assert main(["eval", "--model", "x", "--bench", "nosuch:/x", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'nosuch'" in err and "mmau" in err and "sakura" in err
    assert main(["eval", "--model", "x", "--out", str(tmp_path)]) == 2
    assert "missing --bench" in capsys.readouterr().err
    assert main(["eval", "--model", "x", "--bench", "retention", "--out", str(tmp_path)]) == 2
    assert "need --base" in capsys.readouterr().err
    assert main(["eval", "compare", str(tmp_path / "none")]) == 2
    assert "no report.json" in capsys.readouterr().err

    from speechllm.data.manifest import Utterance, write_manifest

    rows = [Utterance(id=f"u{k}", audio=f"/data/u{k}.wav", duration=1.0, transcript="Hello there.", split="test",
                      attributes={"gender": g, "accent": "Scottish"}) for k, g in enumerate(["male", "female"])]
    write_manifest(tmp_path / "m.jsonl", rows)
    assert main(["eval", "build-builtin", str(tmp_path / "m.jsonl"), str(tmp_path / "b.jsonl")]) == 0
    assert "wrote 6 items" in capsys.readouterr().out


def test_speechllm_checkpoint_is_evaluated_with_audio(tmp_path, tiny_llm_dir, tiny_whisper_dir):
    import numpy as np
    import soundfile as sf

    from speechllm.cli import main

    ckpt = tmp_path / "ckpt"
    assert main(["init-model", "--encoder", str(tiny_whisper_dir), "--llm", str(tiny_llm_dir), str(ckpt)]) == 0
    t = np.arange(8000) / 16000
    sf.write(str(tmp_path / "x.wav"), (0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    rows = [{"id": "g", "kind": "multiple_choice", "instruction": "Gender?", "audios": ["x.wav"],
             "reference": "male", "choices": ["male", "female"]},
            {"id": "m", "kind": "label", "instruction": "Emotion?", "audios": ["gone.wav"], "reference": "sad"}]
    bench = tmp_path / "b.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = evaluate(str(ckpt), [str(bench), "retention"],
                      EvalOptions(out_dir=str(tmp_path / "out"), base=str(tiny_llm_dir), max_new_tokens=4,
                                  limit=None, progress=False, retention_prompts=None))
    assert report["run"]["model"]["type"] == "speechllm"
    section = report["benchmarks"]["jsonl"]
    assert section["answered"] == 1 and section["skipped"]["missing_audio"]["ids"] == ["m"]
    assert (tmp_path / "out" / "jsonl" / "missing_audio.txt").read_text().startswith("m\t")
    # A frozen LLM without LoRA: the text path is the base model, bit for bit.
    assert report["retention"]["kl_to_base"] == 0.0
    assert report["retention"]["text_path_invariance"]["identical"] is True


def test_report_names_the_scoring_profile_and_speech_ifeval_rates(tmp_path):
    from speechllm.eval.report import render_markdown, write_report

    report = {"benchmarks": {"sif": {
        "source": "x", "items": 3, "answered": 3, "target_score": 0.9,
        "scoring": "speech-ifeval", "scoring_rule": "Speech-IFEval's own checkers",
        "speech_ifeval": {"split_rates": {"closed_ended": 0.8, "creative_writing": 0.9, "chain_of_thought": 0.7},
                          "if_rate": 0.8},
        "by_category": {"chain_of_thought": {"kind": "open", "metric": "judge_rate", "value": 0.7, "n": 10,
                                             "ci95": [0.4, 0.9]}}}}}
    md = render_markdown(report)
    assert "scoring: `speech-ifeval`: Speech-IFEval's own checkers" in md
    assert "Speech-IFEval: closed_ended 0.8000, creative_writing 0.9000, chain_of_thought 0.7000; IF-rate 0.8000" in md
    assert write_report(tmp_path, report)["score_per_task"].is_file()  # a yes-rate is drawn as is, not /10
