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
(``single_option``, the built-in benchmark's rule). On a non-speech clip (``contains_speech``
false) a reply counts as correct (``--nonspeech-rule strict``, the default) when it says that no
one speaks (``speechllm.generate.faithful.says_no_speech``: "no speech", "no speaker", "nobody is
speaking", ...) and invents no speaker; ``lenient`` counts any reply that invents no speaker,
off-topic ones included ("The text is in the "no" category."). A reply invents a speaker
(``invents_a_speaker``) when it names a gender or an accent, or speaks of a speaker, a voice or
speech without saying there is none ("The audio is from a solo speaker."; until 2026-11-29 only
a named gender or accent counted, which let such replies through).
Both shares are reported for every non-speech group (``no_invented_speaker``,
``says_no_speech``, the latter among replies that also name no speaker). Their baselines are 0
for the majority label (which names one) and 1/(labels + 1) for chance (a uniform pick among the
labels and "no speaker").

Rows are grouped by what the model could have learnt from: voices seen in training or held out
(natural voices, Kokoro/Piper, apart from the robotic flite/espeak-ng ones, and among them the
gender-converted ones apart), non-speech of kinds
made for training or held out of it, and, with ``--real DIR``, real recordings (a folder with a
``LABELS.tsv`` as in tests/data/audio: file, kind, speaker, gender). Real recordings are
described for the LLM reference with the describe stage's annotators and Whisper's transcript;
synthetic rows use their ``description`` when the manifest has one (a described split), else the
row rendered with ``--template``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REAL_ANNOTATORS = "duration,vad,volume,snr,pitch,asr,speaking_rate"
QUESTIONS = {
    "gender": "Is the speaker male or female?",
    "accent": "What accent does the speaker have?",
}


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def names_only(reply: str, label: str, labels: list[str]) -> bool:
    from speechllm.eval.answer_match import desta_label_match

    return desta_label_match(reply, label) and not any(desta_label_match(reply, o) for o in labels if o != label)


def is_speech(row: dict) -> bool:
    return row["attributes"].get("contains_speech") is not False


def group_of(row: dict, seen_voices: set) -> str:
    """What the model could have learnt this row from (see the module docstring)."""
    synth = row.get("synth") or {}
    if row.get("real"):
        base = "real speech" if is_speech(row) else "real non-speech"
        return f"{base} ({row['real_source']})" if row.get("real_source") else base
    if not is_speech(row):
        return "non-speech, held-out kinds" if synth.get("heldout_sound") else "non-speech, trained kinds"
    voices = "seen voices" if row.get("speaker") in seen_voices else "held-out voices"
    if not synth.get("natural"):
        return voices
    # A gender-converted voice (a pack of the other gender, F0 and formants moved) is its own group.
    return f"natural, {voices}" + (" (converted)" if synth.get("converted_from") else "")


def read_real(folder: Path, template: str) -> list[dict]:
    """Rows of a folder of real recordings (LABELS.tsv), described as the describe stage would."""
    import csv

    from speechllm.config.describe import DescribeConfig
    from speechllm.data.manifest import Utterance
    from speechllm.describe.pipeline import UtteranceDescriber

    describer = UtteranceDescriber(DescribeConfig(annotators=REAL_ANNOTATORS.split(","), template=template))
    rows = []
    with (folder / "LABELS.tsv").open(encoding="utf-8") as f:
        for label in csv.DictReader(f, delimiter="\t"):
            speech = label["kind"] == "speech"
            attributes = {"contains_speech": speech, **({"gender": label["gender"]} if speech else {})}
            utt = Utterance(id=Path(label["file"]).stem, audio=str((folder / label["file"]).resolve()),
                            attributes=attributes, provenance={k: "user" for k in attributes})
            utt, _, _ = describer.describe(utt)
            rows.append(utt.to_dict() | {"real": True, "real_source": folder.name})
    return rows


def ask(predictor, rows: list[dict], question: str, audio_root: Path, batch: int, template: str) -> list[str]:
    from speechllm.describe.renderer import render_description
    from speechllm.eval.predictors import Request

    requests = [Request(id=r["id"], text=question, audios=[str(audio_root / r["audio"])],
                        audio_text=r.get("description") or render_description(r, template)) for r in rows]
    replies: list[str] = []
    for start in range(0, len(requests), batch):
        replies += predictor.predict(requests[start:start + batch])
    return replies


def nonspeech_verdict(reply: str) -> tuple[bool, bool]:
    """A reply about a clip without speech: (it invents no speaker, it also says no one speaks)."""
    from speechllm.generate.faithful import invents_a_speaker, says_no_speech

    no_speaker = not invents_a_speaker(reply)
    return no_speaker, no_speaker and says_no_speech(reply)


def score(rows, replies, attribute, labels, seen_voices, majority, nonspeech_rule: str = "strict") -> dict:
    """Accuracy, majority and chance per group; non-speech groups also get both rules' shares."""
    groups: dict[str, list[bool]] = collections.defaultdict(list)
    majority_hits: dict[str, list[bool]] = collections.defaultdict(list)
    lenient: dict[str, list[bool]] = collections.defaultdict(list)
    strict: dict[str, list[bool]] = collections.defaultdict(list)
    for row, reply in zip(rows, replies, strict=True):
        group = group_of(row, seen_voices)
        if is_speech(row):
            label = row["attributes"][attribute]
            ok, majority_ok = names_only(reply, label, labels), label == majority
        else:  # says no one speaks (strict) / invents no speaker (lenient); the majority label names one
            no_speaker, says = nonspeech_verdict(reply)
            for g in ("all non-speech", group):
                lenient[g].append(no_speaker)
                strict[g].append(says)
            ok, majority_ok = (says if nonspeech_rule == "strict" else no_speaker), False
        for g in ("all", group):
            groups[g].append(ok)
            majority_hits[g].append(majority_ok)
    out = {g: {"n": len(v), "accuracy": sum(v) / len(v), "majority": sum(majority_hits[g]) / len(v),
               "chance": 1 / len(labels) if g not in lenient else 1 / (len(labels) + 1),
               **({"no_invented_speaker": sum(lenient[g]) / len(v), "says_no_speech": sum(strict[g]) / len(v)}
                  if g in lenient else {})}
           for g, v in groups.items()}
    if lenient["all non-speech"]:
        n = len(lenient["all non-speech"])
        out["all non-speech"] = {"n": n, "accuracy": sum((strict if nonspeech_rule == "strict" else lenient)
                                                         ["all non-speech"]) / n,
                                 "majority": 0.0, "chance": 1 / (len(labels) + 1),
                                 "no_invented_speaker": sum(lenient["all non-speech"]) / n,
                                 "says_no_speech": sum(strict["all non-speech"]) / n}
    return out


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
    ap.add_argument("--attributes", default=",".join(QUESTIONS),
                    help=f"attributes to ask about, comma-separated (default: {','.join(QUESTIONS)})")
    ap.add_argument("--template", default="desta2-v1",
                    help="description template for rows without a description (the describe stage's)")
    ap.add_argument("--nonspeech-rule", choices=("strict", "lenient"), default="strict",
                    help="a non-speech reply is right when it says no one speaks and names no speaker (strict), "
                         "or merely names no speaker (lenient); both shares are reported either way")
    ap.add_argument("--real", type=Path, action="append", default=[],
                    help="also ask about the real recordings of this folder (LABELS.tsv, e.g. tests/data/audio); "
                         "repeatable")
    args = ap.parse_args()

    from speechllm.config import ModelConfig
    from speechllm.eval.predictors import SpeechLLMPredictor, TextLLMPredictor
    from speechllm.generate.prompts import generation_context

    test, train = read_rows(args.test), read_rows(args.train)
    seen = {r.get("speaker") for r in train} - {None}
    for folder in args.real:
        test += read_real(folder, args.template)
    predictors = {"speech model": SpeechLLMPredictor(args.model, max_new_tokens=24)}
    if args.llm:
        system = generation_context(None, args.llm_context or None, ModelConfig())
        predictors["LLM reading the description"] = TextLLMPredictor(args.llm, max_new_tokens=24, dtype="bf16",
                                                                     system_prompt=system)
    results: dict = {}
    for attribute in args.attributes.split(","):
        question = QUESTIONS[attribute]
        # Speech rows without this label (a real reader's accent) are not asked about it.
        asked = [r for r in test if not is_speech(r) or attribute in r["attributes"]]
        labels = sorted({r["attributes"][attribute] for r in train + asked if attribute in r["attributes"]})
        majority = collections.Counter(r["attributes"][attribute] for r in train
                                       if attribute in r["attributes"]).most_common(1)[0][0]
        entry = {"question": question, "labels": labels, "majority_label": majority, "chance": 1 / len(labels)}
        for name, predictor in predictors.items():
            replies = ask(predictor, asked, question, args.test.parent, args.batch_size, args.template)
            entry[name] = score(asked, replies, attribute, labels, seen, majority, args.nonspeech_rule)
            entry[name]["answers"] = collections.Counter(replies).most_common(5)
            # Every reply with its voice, so that a failure can be traced to a speaker or a kind of sound.
            entry[name]["replies"] = {r["id"]: {"reply": reply, "group": group_of(r, seen),
                                                "voice": r.get("speaker") or r.get("real_source"),
                                                "label": r["attributes"].get(attribute) if is_speech(r) else "non-speech"}
                                      for r, reply in zip(asked, replies, strict=True)}
        results[attribute] = entry

    order = ("all", "seen voices", "held-out voices", "natural, seen voices", "natural, held-out voices",
             "non-speech, trained kinds", "non-speech, held-out kinds", "real")
    found = {g for entry in results.values() for g in entry["speech model"] if g not in ("answers", "replies")}
    groups = sorted(found, key=lambda g: (next(i for i, o in enumerate(order) if g.startswith(o)), g))
    print("| attribute | rows | n | " + " | ".join(predictors) + " | majority label | uniform chance |")
    print("| --- | --- | ---: | " + " | ".join("---:" for _ in predictors) + " | ---: | ---: |")
    for attribute, entry in results.items():
        first = entry["speech model"]
        for group in groups:
            if group not in first:
                continue
            accs = " | ".join(f"{entry[name][group]['accuracy']:.3f}" for name in predictors)
            print(f"| {attribute} | {group} | {first[group]['n']} | {accs} | {first[group]['majority']:.3f} "
                  f"({entry['majority_label']}) | {first[group]['chance']:.3f} |")
    ns_groups = [g for g in groups if any("no_invented_speaker" in e["speech model"].get(g, {})
                                          for e in results.values())]
    if ns_groups:
        # Both non-speech rules side by side, per predictor: "names no speaker / says no one speaks".
        print("\n| attribute | non-speech rows | n | " + " | ".join(f"{p}: no invented speaker / says no one speaks"
                                                                 for p in predictors) + " |")
        print("| --- | --- | ---: | " + " | ".join("---:" for _ in predictors) + " |")
        for attribute, entry in results.items():
            for group in ns_groups:
                if group not in entry["speech model"]:
                    continue
                n = entry["speech model"][group]["n"]
                cells = " | ".join(f"{round(entry[p][group]['no_invented_speaker'] * n)}/{n} / "
                                   f"{round(entry[p][group]['says_no_speech'] * n)}/{n}" for p in predictors)
                print(f"| {attribute} | {group} | {n} | {cells} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
