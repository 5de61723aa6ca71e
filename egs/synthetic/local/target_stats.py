"""What the training targets teach, per kind of row: the questions asked and what the answers say.

For speech rows: how many answers state the label's gender, state the other one, or none. For
non-speech rows: how many answers say that no one speaks (``says_no_speech``), invent a speaker
(``names_a_speaker``), or do neither ("the gender is unknown"), and how many of those naming no
speaker copy the description back (its ``<start_audio>`` markup).
Also the share of target words per kind (the summed cross-entropy weighs each token the same).

    python egs/synthetic/local/target_stats.py dump/synthetic/targets/train.jsonl [--markdown]
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def question_kind(row: dict) -> str:
    """gender / accent / both, from the row's user message."""
    text = " ".join(m["content"] for m in row.get("messages", []) if m.get("role") == "user").lower()
    gender = "gender" in text or "male or female" in text
    accent = "accent" in text
    return "both" if gender and accent else "gender" if gender else "accent" if accent else "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", type=Path, nargs="+", help="TARGETS.jsonl files")
    args = ap.parse_args()
    from speechllm.generate.faithful import names_a_speaker, says_no_speech
    from speechllm.generate.faithfulness import DEFAULT_VOCABULARIES, response_text_for_matching

    print("| targets | kind | rows | target words (share) | gender/accent/both questions | answers |")
    print("| --- | --- | ---: | ---: | --- | --- |")
    for path in args.targets:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        words = collections.Counter()
        stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for r in rows:
            speech = r["attributes"].get("contains_speech") is not False
            kind = "speech" if speech else "non-speech"
            words[kind] += len(r["response"].split())
            s = stats[kind]
            s["rows"] += 1
            s[question_kind(r)] += 1
            if speech:
                label = r["attributes"].get("gender")
                verdict = DEFAULT_VOCABULARIES["gender"].judge(label, response_text_for_matching(r["response"], r.get("transcript"))) \
                    if label else None
                s["other gender" if verdict and verdict[1] else "states the gender" if verdict and verdict[0]
                  else "no gender"] += 1
            else:
                named = names_a_speaker(r["response"], r.get("transcript"))
                s["invents a speaker" if named else "says no one speaks" if says_no_speech(r["response"]) else "neither"] += 1
                # The generator's markup copied back: the answer repeats the description.
                s["of which echo the description"] += "<start_audio>" in r["response"] and not named
        total = sum(words.values()) or 1
        for kind in ("speech", "non-speech"):
            s = stats[kind]
            if not s["rows"]:
                continue
            keys = (("states the gender", "other gender", "no gender") if kind == "speech"
                    else ("says no one speaks", "invents a speaker", "neither", "of which echo the description"))
            answers = ", ".join(f"{k} {s[k]}" for k in keys)
            print(f"| {path} | {kind} | {s['rows']} | {words[kind]} ({words[kind] / total:.0%}) | "
                  f"{s['gender']}/{s['accent']}/{s['both']} | {answers} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
