"""Official scoring reproduced on the anchors' own published outputs.

The fixtures under tests/data/eval_anchors/ are a few rows of the anchors' published outputs with
the verdicts of the anchors' own code (MMAU's ``string_match``, Speech-IFEval's stored reports
and its checkers run on made-up answers); ``make_fixtures.py`` there says how each was made.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechllm.cli.eval import parse_scoring_args
from speechllm.eval.constraints import check_constraint
from speechllm.eval.items import BenchItem, BenchmarkError
from speechllm.eval.judge import SPEECH_IFEVAL_COT, judge_answers
from speechllm.eval.loaders import load_benchmark
from speechllm.eval.retention import relative_drop
from speechllm.eval.scoring_profiles import aggregate, score_item
from speechllm.eval.speech_ifeval import count_sentences, count_words, if_rate, parse_result_verdict
from speechllm.eval.suite import speech_ifeval_summary

ANCHORS = Path(__file__).parent / "data" / "eval_anchors"


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (ANCHORS / name).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def mmau_fixture() -> dict:
    return json.loads((ANCHORS / "mmau_desta25.json").read_text(encoding="utf-8"))


@pytest.fixture
def mmau_bench(tmp_path, mmau_fixture):
    path = tmp_path / "mmau-test-mini_results.json"
    path.write_text(json.dumps(mmau_fixture["rows"]), encoding="utf-8")
    return load_benchmark(f"mmau:{path}")


def test_mmau_default_profile_equals_the_official_scorer_on_desta25_outputs(mmau_bench, mmau_fixture):
    assert mmau_bench.scoring == "mmau-official"
    by_id = {r["id"]: r for r in mmau_fixture["rows"]}
    for item in mmau_bench.items:
        row = by_id[item.id]
        assert score_item(item, row["model_output"], mmau_bench.scoring)["correct"] is row["official_match"], item.id


def test_mmau_lenient_profile_stays_available_and_differs_where_documented(mmau_bench, mmau_fixture):
    by_id = {r["id"]: r for r in mmau_fixture["rows"]}
    lenient = {i.id: score_item(i, by_id[i.id]["model_output"], "speechllm")["correct"] for i in mmau_bench.items}
    # The fixture holds every published answer on which the two rules disagree (4 of 1000).
    assert sum(lenient[k] != by_id[k]["official_match"] for k in lenient) == 4


def test_mmau_constructed_answers_match_the_official_rule(mmau_bench, mmau_fixture):
    items = {i.id: i for i in mmau_bench.items}
    for case in mmau_fixture["constructed"]:
        item = items[case["id"]]
        if "answer" in case:  # a made-up item (number words)
            item = BenchItem(id="n", kind="multiple_choice", instruction="?", reference=case["answer"],
                             choices=case["choices"])
        got = score_item(item, case["model_output"], "mmau-official")["correct"]
        assert got is case["official_match"], case


def test_mmau_bare_letter_never_matches_but_lenient_parser_credits_it(mmau_bench):
    item = mmau_bench.items[0]
    letter = "ABCD"[item.choices.index(item.reference)]
    assert score_item(item, f"The answer is {letter}.", "mmau-official")["correct"] is False
    assert score_item(item, f"The answer is {letter}.", "speechllm")["correct"] is True


def test_mmau_loader_reads_the_published_test_mini_schema():
    bench = load_benchmark(f"mmau:{ANCHORS / 'mmau-test-mini.json'}")
    first = json.loads((ANCHORS / "mmau-test-mini.json").read_text())[0]
    item = bench.items[0]
    assert (item.id, item.reference, item.choices, item.category) == (
        first["id"], first["answer"], first["choices"], first["task"])
    assert item.audios == [str(ANCHORS / first["audio_id"])]
    assert item.metadata["difficulty"] == first["difficulty"] and bench.breakdown_keys == ["category", "difficulty"]


def test_scoring_override_by_name_and_unknown_profile():
    bench = load_benchmark(f"mmau:{ANCHORS / 'mmau-test-mini.json'}", scoring="speechllm")
    assert bench.scoring == "speechllm"
    with pytest.raises(BenchmarkError, match="unknown scoring profile 'nope'; known: speechllm, mmau-official"):
        load_benchmark(f"mmau:{ANCHORS / 'mmau-test-mini.json'}", scoring="nope")
    assert parse_scoring_args(["mmau=speechllm", "desta-raw-empty"]) == {"mmau": "speechllm", "*": "desta-raw-empty"}
    with pytest.raises(BenchmarkError, match="unknown scoring profile"):
        parse_scoring_args(["mmau=strict"])


# --------------------------------------------------------------------------- Speech-IFEval


@pytest.mark.parametrize("row", _jsonl("speech_ifeval_verdicts.jsonl"),
                         ids=lambda r: f"{r['model'][:6]}-{r['split'][:6]}-{r['id']}")
def test_speech_ifeval_checkers_reproduce_stored_verdicts(row):
    got = [check_constraint(c, row["response"], k, rules="speech-ifeval")
           for c, k in zip(row["instruction_id_list"], row["kwargs"], strict=True)]
    assert got == row["follow_instruction_list"]


@pytest.mark.parametrize("case", _jsonl("speech_ifeval_constructed.jsonl"), ids=lambda c: f"{c['id']}:{c['response'][:20]!r}")
def test_speech_ifeval_checkers_match_its_code_on_constructed_answers(case):
    assert check_constraint(case["id"], case["response"], case["kwargs"], rules="speech-ifeval") is case["official"]


def test_speech_ifeval_fixture_covers_what_speechllms_own_checkers_miss():
    rows = _jsonl("speech_ifeval_verdicts.jsonl")
    differ = [r for r in rows if [check_constraint(c, r["response"], k) for c, k in
                                  zip(r["instruction_id_list"], r["kwargs"])] != r["follow_instruction_list"]]
    assert {r["instruction_id_list"][0] for r in differ} >= {
        "detectable_format:number_bullet_lists", "length_constraints:number_paragraphs",
        "length_constraints:number_words"}


def test_speech_ifeval_counters():
    assert count_words("the speaker's voice") == 4
    assert count_sentences("Dr. Smith went home. He was tired.") == 2
    assert count_sentences("It costs 3.50 dollars. Fine!") == 2


def test_speech_ifeval_profile_fails_every_constraint_of_an_empty_answer():
    item = BenchItem(id="x", kind="instruction", instruction="?", constraints=[
        {"id": "keywords:forbidden_words", "kwargs": {"forbidden_words": ["voice"]}}])
    assert score_item(item, "  ", "speech-ifeval")["correct"] is False
    assert score_item(item, "  ", "speechllm")["correct"] is True


def test_speech_ifeval_loader_reads_the_published_splits():
    bench = load_benchmark(f"speech-ifeval:{ANCHORS / 'speech_ifeval'}")
    assert bench.scoring == "speech-ifeval"
    by_cat = {}
    for item in bench.items:
        by_cat.setdefault(item.category, []).append(item)
    assert {k: len(v) for k, v in by_cat.items()} == {"closed_ended": 3, "creative_writing": 3, "chain_of_thought": 3}
    first = json.loads((ANCHORS / "speech_ifeval/data/eval_data/creative_writing.jsonl").read_text().splitlines()[0])
    item = by_cat["creative_writing"][0]
    assert item.kind == "instruction" and item.id == f"creative_writing/{first['id']}"
    assert item.constraints == [{"id": i, "kwargs": k} for i, k in zip(first["instruction_id_list"], first["kwargs"])]
    assert item.audios == [str(ANCHORS / "speech_ifeval/data/audios" / first["audio_filepath"])]
    assert item.audio_text == first["textual_audio"] and item.metadata["dataset"] == first["dataset"]
    cot = by_cat["chain_of_thought"][0]
    assert (cot.kind, cot.metadata["judge_protocol"], cot.id) == ("open", "speech-ifeval-cot", "chain_of_thought/0")
    with pytest.raises(BenchmarkError, match="no Speech-IFEval split"):
        load_benchmark(f"speech-ifeval:{ANCHORS}")


def test_speech_ifeval_cot_verdicts_parsed_as_stored():
    for row in _jsonl("speech_ifeval_cot_judge.jsonl"):
        assert parse_result_verdict(row["eval_response"]) is row["correct"]
    assert parse_result_verdict("no verdict") is None
    assert parse_result_verdict("Result: yes") is True and parse_result_verdict("RESULT: NO.") is False


class _FakeJudge:
    def __init__(self, text: str):
        self.text, self.seen = text, []

    def describe(self):
        return {"type": "fake"}

    def complete(self, prompts, max_new_tokens=None):
        self.seen.append((prompts, max_new_tokens))
        return [self.text for _ in prompts]


def test_cot_items_use_speech_ifevals_judge_prompt_and_yes_rate():
    judge = _FakeJudge("Step by step... Result: YES")
    (v,) = judge_answers(judge, ["Think step by step."], ["First, ..."], [None], protocols=["speech-ifeval-cot"])
    (prompts, max_tokens), = judge.seen
    assert prompts[0][0] == {"role": "system", "content": SPEECH_IFEVAL_COT.system}
    assert prompts[0][1]["content"] == "User input: Think step by step.\nModel's Response: First, ..."
    assert (v.score, v.unparsable, max_tokens) == (1.0, 0, SPEECH_IFEVAL_COT.max_tokens)
    item = BenchItem(id="c", kind="open", instruction="q", category="chain_of_thought",
                     metadata={"judge_protocol": "speech-ifeval-cot"})
    rows = [{**score_item(item, "a"), "score": s} for s in (1.0, 0.0, None, 1.0)]
    cat = aggregate(rows)["by_category"]["chain_of_thought"]
    assert (cat["metric"], cat["value"]) == ("judge_rate", 0.5)  # an unscored item counts as no


def test_if_rate_and_relative_drop_reproduce_the_readme_arithmetic():
    llama = if_rate({"closed_ended": 0.9335, "creative_writing": 0.9375, "chain_of_thought": 0.905})
    assert llama == pytest.approx(0.92533, abs=1e-5)
    assert relative_drop(0.8923, 0.9253) == pytest.approx(-0.0357, abs=5e-5)
    assert if_rate({"closed_ended": 0.9, "creative_writing": 0.9}) is None
    summary = speech_ifeval_summary({"closed_ended": {"value": 0.8}, "creative_writing": {"value": 0.9},
                                     "chain_of_thought": {"value": 1.0}})
    assert summary["if_rate"] == pytest.approx(0.9)


# --------------------------------------------------------------------------- Dynamic-SUPERB

DS_TASK = ANCHORS / "dynamic_superb" / "SpeakerCounting_Fixture"


def test_dynamic_superb_reads_the_published_dataset_folder(tmp_path):
    import pyarrow.parquet as pq

    bench = load_benchmark(f"dynamic-superb:{DS_TASK.parent}", audio_root=tmp_path)
    table = pq.read_table(DS_TASK / "data" / "test-00000-of-00001.parquet").to_pylist()
    assert bench.scoring == "desta" and len(bench.items) == len(table) == 3
    for item, row in zip(bench.items, table, strict=True):
        assert (item.id, item.category, item.reference, item.instruction) == (
            f"SpeakerCounting_Fixture/{Path(row['file']).stem}", "SpeakerCounting_Fixture", row["label"],
            row["instruction"])
        assert item.audios == [str(tmp_path / "SpeakerCounting_Fixture" / row["file"])]
        assert Path(item.audios[0]).read_bytes() == row["audio"]["bytes"]
    # One task folder alone loads the same items; a second load reuses the written audio.
    again = load_benchmark(f"dynamic-superb:{DS_TASK}", audio_root=tmp_path)
    assert [i.id for i in again.items] == [i.id for i in bench.items]


def test_dynamic_superb_default_scoring_counts_labels_that_normalise_to_nothing(tmp_path):
    bench = load_benchmark(f"dynamic-superb:{DS_TASK}", audio_root=tmp_path)
    rows = [score_item(i, "There are two speakers.", bench.scoring) for i in bench.items]
    assert [r["correct"] for r in rows] == [False, True, True]  # "(A)", "[laughter]": DeSTA credits
    assert aggregate(rows)["by_kind"]["label"]["empty_labels"] == 2
    strict = [score_item(i, "There are two speakers.", "desta-raw-empty")["correct"] for i in bench.items]
    assert strict == [False, False, False]


def test_dynamic_superb_lfs_pointer_is_a_one_line_error(tmp_path):
    task = tmp_path / "Task" / "data"
    task.mkdir(parents=True)
    (task / "test-00000-of-00001.parquet").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(BenchmarkError, match=r"not a readable parquet file .*git lfs pull"):
        load_benchmark(f"dynamic-superb:{tmp_path}", audio_root=tmp_path / "audio")


# --------------------------------------------------------------------------- through evaluate()


class _TextStub:
    """Answers every request with one text, reading the text stand-in (no audio needed)."""

    needs_audio = False

    def __init__(self, answer: str):
        self.answer = answer

    def describe(self):
        return {"type": "stub", "answer": self.answer}

    def predict(self, requests):
        return [self.answer for _ in requests]


def test_speech_ifeval_report_names_the_profile_and_gives_split_rates_and_if_rate(tmp_path, monkeypatch):
    from speechllm.eval import suite as harness

    judge = _FakeJudge("The answer reasons. Result: YES")
    monkeypatch.setattr(harness, "make_judge", lambda *a, **k: judge)
    options = harness.EvalOptions(out_dir=str(tmp_path / "run"), judge="fake", progress=False)
    report = harness.evaluate("stub", [f"speech-ifeval:{ANCHORS / 'speech_ifeval'}"], options,
                              predictor=_TextStub("OK"))
    section = report["benchmarks"]["speech-ifeval"]
    assert section["scoring"] == "speech-ifeval" and "strict" in section["scoring_rule"]
    # "OK" is all capitals (the closed-ended rows ask for that) and no 3-bullet list.
    assert section["speech_ifeval"]["split_rates"] == {"closed_ended": 1.0, "creative_writing": 0.0,
                                                       "chain_of_thought": 1.0}
    assert section["speech_ifeval"]["if_rate"] == pytest.approx(2 / 3)
    assert judge.seen and judge.seen[0][0][0][0]["content"] == SPEECH_IFEVAL_COT.system
    assert json.loads((tmp_path / "run" / "report.json").read_text())["benchmarks"]["speech-ifeval"]["scoring"] == "speech-ifeval"


def test_scoring_override_reaches_the_report_and_names_must_match_a_bench(tmp_path):
    from speechllm.eval.suite import EvalOptions, evaluate

    rows = json.loads((ANCHORS / "mmau-test-mini.json").read_text())
    (tmp_path / "mmau.json").write_text(json.dumps(rows))
    for row in rows:  # the stub hears nothing, but the runner skips items whose audio is missing
        (tmp_path / row["audio_id"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / row["audio_id"]).write_bytes(b"")
    bench, first = f"mmau:{tmp_path / 'mmau.json'}", rows[0]
    letter = "ABCD"[first["choices"].index(first["answer"])]
    stub = _TextStub(f"The answer is {letter}.")
    stub.needs_audio = True
    default = evaluate("stub", [bench], EvalOptions(out_dir=str(tmp_path / "a"), progress=False), predictor=stub)
    lenient = evaluate("stub", [bench], EvalOptions(out_dir=str(tmp_path / "b"), progress=False,
                                                    scoring={"mmau": "speechllm"}), predictor=stub)
    assert default["benchmarks"]["mmau"]["scoring"] == "mmau-official"
    assert lenient["benchmarks"]["mmau"]["scoring"] == "speechllm"
    cat = first["task"]
    assert default["benchmarks"]["mmau"]["by_category"][cat]["n"] >= 1
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "b" / "mmau" / "scores.jsonl").read_text().splitlines())}
    assert rows[first["id"]]["correct"] is True
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "a" / "mmau" / "scores.jsonl").read_text().splitlines())}
    assert rows[first["id"]]["correct"] is False
    with pytest.raises(BenchmarkError, match="--scoring names sakura, which no --bench loads"):
        evaluate("stub", [bench], EvalOptions(out_dir=str(tmp_path / "c"), scoring={"sakura": "speechllm"}),
                 predictor=stub)
