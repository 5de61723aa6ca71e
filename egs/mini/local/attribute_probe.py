"""Gender and accent of held-out synthetic speech, asked the way the model was trained to hear it.

The built-in benchmark asks with an answer-format request ("Answer with one of: American,
British, ...") that SmolLM2-135M cannot follow even when it reads the exact description (see
RESULTS.md). This probe asks the one-attribute questions of the ``builtin:speaker`` prompt pool
instead, on every row of the test split, and splits the result by voices seen in training and
voices held out of it. Baselines: uniform chance over the labels, and the training split's
majority label. With ``--llm``, the bare LLM reading each row's seed description answers the
same questions, with the generator-only context prompt the targets were generated with
(``--llm-context``, default ``builtin:describe``): the teacher's ceiling. Without that prompt
SmolLM2-135M answers "male" to most descriptions that say "Gender: Female".

    python egs/mini/local/attribute_probe.py --model exp/mini/train/final \
        --test dump/mini/data/test.jsonl --train dump/mini/data/train.jsonl \
        --llm offline:smollm2-135m-instruct --out exp/mini/eval/attribute_probe.json

A reply counts as correct when it names the label and no other label of that attribute
(``single_option``, the built-in benchmark's rule).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = {
    "gender": "Is the speaker male or female?",
    "accent": "What accent does the speaker have?",
}


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def names_only(reply: str, label: str, labels: list[str]) -> bool:
    from speechllm.eval.scorers import desta_label_match

    return desta_label_match(reply, label) and not any(desta_label_match(reply, o) for o in labels if o != label)


def ask(predictor, rows: list[dict], question: str, audio_root: Path, batch: int) -> list[str]:
    from speechllm.describe.renderer import render_description
    from speechllm.eval.predictors import Request

    requests = [Request(id=r["id"], text=question, audios=[str(audio_root / r["audio"])],
                        audio_text=render_description(r)) for r in rows]
    replies: list[str] = []
    for start in range(0, len(requests), batch):
        replies += predictor.predict(requests[start:start + batch])
    return replies


def score(rows, replies, attribute, labels, seen_voices, majority) -> dict:
    groups: dict[str, list[bool]] = collections.defaultdict(list)
    majority_hits: dict[str, list[bool]] = collections.defaultdict(list)
    for row, reply in zip(rows, replies, strict=True):
        label = row["attributes"][attribute]
        ok = names_only(reply, label, labels)
        group = "seen voices" if row["speaker"] in seen_voices else "held-out voices"
        for g in ("all", group):
            groups[g].append(ok)
            majority_hits[g].append(label == majority)
    return {g: {"n": len(v), "accuracy": sum(v) / len(v), "majority": sum(majority_hits[g]) / len(v)}
            for g, v in groups.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="trained SpeechLLM folder (train.output_dir/final)")
    ap.add_argument("--test", required=True, type=Path, help="held-out manifest (synth test split)")
    ap.add_argument("--train", required=True, type=Path, help="training manifest (seen voices, majority labels)")
    ap.add_argument("--llm", default=None, help="also ask this bare LLM, reading each seed description")
    ap.add_argument("--llm-context", default="builtin:describe",
                    help="system prompt for --llm: generation.context_prompt of the targets ('' for none)")
    ap.add_argument("--out", type=Path, default=None, help="write the results here (JSON)")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    from speechllm.config import ModelConfig
    from speechllm.eval.predictors import SpeechLLMPredictor, TextLLMPredictor
    from speechllm.generate.prompts import generation_context

    test, train = read_rows(args.test), read_rows(args.train)
    seen = {r["speaker"] for r in train}
    predictors = {"speech model": SpeechLLMPredictor(args.model, max_new_tokens=24)}
    if args.llm:
        system = generation_context(None, args.llm_context or None, ModelConfig())
        predictors["LLM reading the description"] = TextLLMPredictor(args.llm, max_new_tokens=24, dtype="bf16",
                                                                     system_prompt=system)
    results: dict = {}
    for attribute, question in QUESTIONS.items():
        labels = sorted({r["attributes"][attribute] for r in train + test})
        majority = collections.Counter(r["attributes"][attribute] for r in train).most_common(1)[0][0]
        entry = {"question": question, "labels": labels, "majority_label": majority, "chance": 1 / len(labels)}
        for name, predictor in predictors.items():
            replies = ask(predictor, test, question, args.test.parent, args.batch_size)
            entry[name] = score(test, replies, attribute, labels, seen, majority)
            entry[name]["answers"] = collections.Counter(replies).most_common(5)
        results[attribute] = entry

    print("| attribute | voices | n | " + " | ".join(predictors) + " | majority label | uniform chance |")
    print("| --- | --- | ---: | " + " | ".join("---:" for _ in predictors) + " | ---: | ---: |")
    for attribute, entry in results.items():
        first = entry["speech model"]
        for group in ("all", "seen voices", "held-out voices"):
            if group not in first:
                continue
            accs = " | ".join(f"{entry[name][group]['accuracy']:.3f}" for name in predictors)
            print(f"| {attribute} | {group} | {first[group]['n']} | {accs} | {first[group]['majority']:.3f} "
                  f"({entry['majority_label']}) | {entry['chance']:.3f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
