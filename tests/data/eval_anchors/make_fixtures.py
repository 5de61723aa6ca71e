"""Regenerate the anchor fixtures in this folder from local clones of the anchor repositories.

    python tests/data/eval_anchors/make_fixtures.py \
        --mmau CLONE_OF_Sakshi113/MMAU --desta25 CLONE_OF_kehanlu/DeSTA2.5-Audio \
        --speech-ifeval CLONE_OF_kehanlu/Speech-IFEval --anchor-python VENV/bin/python \
        [--out tests/data/eval_anchors]

``--anchor-python`` is an interpreter with Speech-IFEval's requirements (absl-py, langdetect,
nltk, immutabledict; ``pip install -r requirements.txt`` of the clone, in a separate virtual
environment): the constructed Speech-IFEval answers are checked there by the clone's own
``instruction_following_eval`` package, with the strict harness's empty-answer rule.

What it writes, and where each official verdict comes from (nothing of the anchors' code is
copied into this project: their code runs here, from the clones, outside the package):

- ``mmau_desta25.json``: rows of DeSTA2.5's published MMAU test-mini outputs
  (``examples/evaluation/MMAU-v05.15.25/results/mmau-test-mini_results.json``), every field as
  published, plus ``official_match``: MMAU's ``string_match`` from the MMAU clone's
  ``evaluation.py``, imported and called on ``model_prediction`` exactly as DeSTA2.5's
  ``mmau_evaluate.py`` calls it. ``constructed`` holds made-up answers on some of those rows
  (bare letters, number words, permuted choices) with the same function's verdict.
- ``mmau-test-mini.json``: the first rows of the MMAU clone's ``mmau-test-mini.json`` (loader schema).
- ``speech_ifeval_verdicts.jsonl``: rows of Speech-IFEval's stored rule-based reports
  (``outputs/<model>/reports/rule_eval@<split>.jsonl.jsonl``), with the verdicts its
  ``evaluation_main`` stored (``follow_instruction_list``); chosen to cover every constraint id,
  every way speechllm's own checkers used to disagree, empty answers, and sentence counts at the
  threshold. ``speech_ifeval_constructed.jsonl``: made-up answers for the causes the stored
  outputs lack (empty answers, curly quotes, text without cased letters, bullet and paragraph
  styles), each with the verdict of the clone's own checker (see ``--anchor-python``).
  ``speech_ifeval_cot_judge.jsonl``: rows of the stored chain-of-thought judge outputs
  (``reports/llm_eval@chain-of-thought.jsonl``: ``eval_response`` and its verdict ``correct``).
- ``speech_ifeval/data/eval_data/<split>.jsonl``: the first rows of each published split.

The choice of rows is deterministic (file order), so a rerun on the same commits writes the same
files. The anchor commits used are printed and recorded in ``PROVENANCE.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
MMAU_RESULTS = "examples/evaluation/MMAU-v05.15.25/results/mmau-test-mini_results.json"
SPLITS = ("closed_ended_questions", "creative_writing", "chain-of-thought")
MODELS = ("DeSTA-ntu--DeSTA2-8B-beta", "meta-llama--Meta-Llama-3-8B-Instruct")


def _commit(clone: Path) -> str:
    return subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def _official_string_match(mmau_clone: Path):
    spec = importlib.util.spec_from_file_location("mmau_official_evaluation", mmau_clone / "evaluation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the module's CLI sits under __main__, nothing runs
    return module.string_match


def make_mmau(mmau: Path, desta25: Path, out: Path) -> None:
    sys.path.insert(0, str(REPO))
    from speechllm.eval.answer_match import parse_choice

    string_match = _official_string_match(mmau)
    rows = json.loads((desta25 / MMAU_RESULTS).read_text(encoding="utf-8"))
    for r in rows:
        r["official_match"] = bool(string_match(r["answer"], r["model_prediction"], r["choices"]))
    # Every row on which speechllm's lenient parser and MMAU's rule disagree, then the first rows
    # of each task, correct and wrong.
    picked = []
    for r in rows:
        lenient = parse_choice(r["model_output"], r["choices"]).index
        if (lenient is not None and r["choices"][lenient] == r["answer"]) != r["official_match"]:
            picked.append(r)
    for task in ("sound", "music", "speech"):
        for verdict in (True, False):
            picked += [r for r in rows if r["task"] == task and r["official_match"] is verdict
                       and r not in picked][:2]
    by_id = {r["id"]: r for r in picked}
    first = picked[len(picked) - 1]
    constructed = []
    for row in picked[-6:]:
        answer_index = row["choices"].index(row["answer"])
        letter = "ABCD"[answer_index]
        for text in (letter, f"The answer is {letter}.", f"({letter}) {row['answer']}",
                     " ".join(reversed(row["answer"].split())), f"Not {row['answer']}."):
            constructed.append({"id": row["id"], "model_output": text,
                                "official_match": bool(string_match(row["answer"], text, row["choices"]))})
    # Number words: "ninety-one" holds the word "ninety".
    numbers = {"id": first["id"], "answer": "ninety", "choices": ["ninety", "ten", "two", "five"]}
    for text in ("ninety-one", "ninety"):
        constructed.append({**numbers, "model_output": text,
                            "official_match": bool(string_match("ninety", text, numbers["choices"]))})
    (out / "mmau_desta25.json").write_text(json.dumps(
        {"source": f"kehanlu/DeSTA2.5-Audio@{_commit(desta25)}:{MMAU_RESULTS}",
         "official_rule": f"Sakshi113/MMAU@{_commit(mmau)}:evaluation.py string_match",
         "rows": list(by_id.values()), "constructed": constructed}, indent=1, ensure_ascii=False) + "\n",
        encoding="utf-8")
    test_mini = json.loads((mmau / "mmau-test-mini.json").read_text(encoding="utf-8"))
    (out / "mmau-test-mini.json").write_text(json.dumps(test_mini[:3], indent=4) + "\n", encoding="utf-8")
    print(f"mmau: {len(by_id)} rows, {len(constructed)} constructed answers")


def _old_checker_agrees(row: dict) -> bool:
    from speechllm.eval.constraints import check_constraint

    old = [check_constraint(c, row["response"], k) for c, k in zip(row["instruction_id_list"], row["kwargs"])]
    return old == row["follow_instruction_list"]


def make_speech_ifeval(clone: Path, out: Path) -> None:
    sys.path.insert(0, str(REPO))
    from speechllm.eval.speech_ifeval import count_sentences

    keep_fields = ("id", "key", "dataset", "metric", "instruction", "instruction_id_list", "kwargs",
                   "response", "follow_instruction_list", "follow_all_instructions")
    rows = []
    for model in MODELS:
        for split in ("closed_ended_questions", "creative_writing"):
            path = clone / "outputs" / model / "reports" / f"rule_eval@{split}.jsonl.jsonl"
            for line in path.read_text(encoding="utf-8").splitlines():
                r = json.loads(line)
                rows.append({"model": model, "split": split, **{k: r[k] for k in keep_fields if k in r}})
    picked: list[dict] = []
    per_id: dict[tuple[str, bool, bool], int] = {}
    for r in rows:
        cid = r["instruction_id_list"][0]
        key = (cid, _old_checker_agrees(r), r["follow_all_instructions"])
        near = False
        if cid == "length_constraints:number_sentences":
            # Sentence counts at the threshold test the splitter hardest.
            near = abs(count_sentences(r["response"]) - r["kwargs"][0]["num_sentences"]) <= 1
        limit = 4 if near else 2
        if "```Json" in r["response"] or "```JSON" in r["response"]:
            near, limit = True, 2  # the fences speechllm's own checker did not strip
        if per_id.get((*key, near), 0) < limit or not r["response"].strip():
            per_id[(*key, near)] = per_id.get((*key, near), 0) + 1
            if not r["response"].strip() and any(not p["response"].strip() for p in picked):
                continue
            picked.append(r)
    with open(out / "speech_ifeval_verdicts.jsonl", "w", encoding="utf-8") as f:
        for r in picked:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    judged = []
    for model in MODELS:
        path = clone / "outputs" / model / "reports" / "llm_eval@chain-of-thought.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines()
        yes = [json.loads(x) for x in lines if json.loads(x)["correct"]][:3]
        no = [json.loads(x) for x in lines if not json.loads(x)["correct"]][:3]
        judged += [{"model": model, "instruction": r["instruction"], "response": r["response"],
                    "eval_response": r["eval_response"], "correct": r["correct"]} for r in yes + no]
    with open(out / "speech_ifeval_cot_judge.jsonl", "w", encoding="utf-8") as f:
        for r in judged:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    data = out / "speech_ifeval" / "data" / "eval_data"
    data.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        lines = (clone / "data" / "eval_data" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        (data / f"{split}.jsonl").write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")
    print(f"speech-ifeval: {len(picked)} rule verdict rows, {len(judged)} judge rows "
          f"(commit {_commit(clone)})")


#: Made-up answers for the rules the stored outputs do not exercise: (id, kwargs, response).
CONSTRUCTED = [
    ("startend:quotation", {}, "\u201cHello there.\u201d"),
    ("startend:quotation", {}, '"Hello there."'),
    ("startend:quotation", {}, "   "),
    ("change_case:english_capital", {}, "123 456"),
    ("change_case:english_lowercase", {}, "123 456"),
    ("change_case:english_lowercase", {}, "ok, 123"),
    ("change_case:english_capital", {}, ""),
    ("detectable_format:json_format", {}, '```Json\n{"a": 1}\n```'),
    ("detectable_format:json_format", {}, '```JSON\n{"a": 1}\n```'),
    ("detectable_format:json_format", {}, '```python\n{"a": 1}\n```'),
    ("detectable_format:json_format", {}, "\n"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "\u2022 one\n\u2022 two\n\u2022 three"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "1. one\n2. two\n3. three"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "Intro\n* one\n** bold line\n- two"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "2023 was a year.\n* one"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\\n* two"),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\nSecond."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\n\nSecond."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\n \nSecond."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First. *** Second."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "\n***\nFirst.\nSecond.\n***"),
    ("length_constraints:number_words", {"num_words": 4, "relation": "less than"}, "the speaker's voice"),
    ("length_constraints:number_words", {"num_words": 4, "relation": "at least"}, "the speaker's voice"),
    ("keywords:existence", {"keywords": ["voice"]}, "VOICES everywhere"),
    ("keywords:forbidden_words", {"forbidden_words": ["voice"]}, "VOICES everywhere"),
    ("keywords:forbidden_words", {"forbidden_words": ["voice"]}, "a Voice."),
    ("keywords:forbidden_words", {"forbidden_words": ["voice"]}, ""),
    ("detectable_format:title", {}, "<<  >> text"),
    ("detectable_format:title", {}, "<<A title>> text"),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, '"Done. Any other questions?"'),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "'say hi.' Hi!"),
]

#: Runs in the anchor interpreter, in the clone: the clone's checkers behind the strict harness's
#: empty-answer guard (``response.strip() and instruction.check_following(response)``).
_ANCHOR_SNIPPET = """
import json, sys
from instruction_following_eval import instructions_registry
out = []
for cid, kwargs, response in json.load(sys.stdin):
    checker = instructions_registry.INSTRUCTION_DICT[cid](cid)
    checker.build_description(**kwargs)
    out.append(bool(response.strip() and checker.check_following(response)))
print(json.dumps(out))
"""


def make_speech_ifeval_constructed(clone: Path, anchor_python: str, out: Path) -> None:
    done = subprocess.run([anchor_python, "-c", _ANCHOR_SNIPPET], cwd=clone, check=True, text=True,
                          capture_output=True, input=json.dumps(CONSTRUCTED))
    verdicts = json.loads(done.stdout)
    with open(out / "speech_ifeval_constructed.jsonl", "w", encoding="utf-8") as f:
        for (cid, kwargs, response), verdict in zip(CONSTRUCTED, verdicts, strict=True):
            f.write(json.dumps({"id": cid, "kwargs": kwargs, "response": response,
                                "official": verdict}, ensure_ascii=False) + "\n")
    print(f"speech-ifeval constructed: {len(verdicts)} answers checked by the clone's checkers")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mmau", type=Path, required=True, help="clone of github.com/Sakshi113/MMAU")
    ap.add_argument("--desta25", type=Path, required=True, help="clone of github.com/kehanlu/DeSTA2.5-Audio")
    ap.add_argument("--speech-ifeval", type=Path, required=True, help="clone of github.com/kehanlu/Speech-IFEval")
    ap.add_argument("--anchor-python", required=True,
                    help="an interpreter with Speech-IFEval's requirements installed (a separate venv)")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    make_mmau(args.mmau, args.desta25, args.out)
    make_speech_ifeval(args.speech_ifeval, args.out)
    make_speech_ifeval_constructed(args.speech_ifeval, args.anchor_python, args.out)
    print(f"commits: MMAU {_commit(args.mmau)}, DeSTA2.5-Audio {_commit(args.desta25)}, "
          f"Speech-IFEval {_commit(args.speech_ifeval)}")


if __name__ == "__main__":
    main()
