"""How faithful the teacher is to each description template, before any filtering.

SmolLM2-135M (the generator, with the ``builtin:describe`` context prompt) answers the
``builtin:hearing`` questions, greedy, about the first non-speech, female and male rows of a
described split, each row rendered with every template given (question i of the pool for row
i). Printed per template (and per generator note, ``--note``): on non-speech rows, answers that
invent no speaker (``invents_a_speaker``: no gender or accent named, no speaker or voice spoken of
without saying there is none), that also say no one speaks, and how many of those only copy the
description back (``copies_description``); on speech rows, answers faithful to the labels
(``unfaithful_reason``) and answers that state the label's gender.

    python egs/synthetic/local/teacher_descriptions.py dump/synthetic/described/train.jsonl \\
        --templates desta2-v2,desta2-v3 \\
        --note "If it says there is no speech, say that no one is speaking and what the sound is."

``--note`` adds a sentence to the generator-only context prompt (``builtin:describe``), to see
whether telling the teacher how to answer for non-speech gets answers in its own words.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("described", type=Path, help="a described split (speechllm describe output)")
    ap.add_argument("--templates", default="desta2-v2,desta2-v3")
    ap.add_argument("--per-kind", type=int, default=36, help="non-speech rows; female and male rows get 2/3 of it")
    ap.add_argument("--llm", default="offline:smollm2-135m-instruct")
    ap.add_argument("--note", action="append", default=[],
                    help="a sentence added to the builtin:describe context (repeatable: one table row each)")
    args = ap.parse_args()

    from speechllm.config import ModelConfig
    from speechllm.describe.renderer import render_description
    from speechllm.eval.predictors import Request, TextLLMPredictor
    from speechllm.generate.faithful import (
        copies_description,
        invents_a_speaker,
        says_no_speech,
        unfaithful_reason,
    )
    from speechllm.generate.faithfulness import DEFAULT_VOCABULARIES, response_text_for_matching
    from speechllm.generate.prompts import generation_context, read_prompt_pool

    rows = [json.loads(line) for line in args.described.read_text(encoding="utf-8").splitlines() if line.strip()]
    sound = [r for r in rows if r["attributes"].get("contains_speech") is False][:args.per_kind]
    n_speech = args.per_kind * 2 // 3
    female = [r for r in rows if r["attributes"].get("gender") == "female"][:n_speech]
    male = [r for r in rows if r["attributes"].get("gender") == "male"][:n_speech]
    chosen = sound + female + male
    questions = read_prompt_pool("builtin:hearing")
    context = generation_context(None, "builtin:describe", ModelConfig())
    llms = {"": TextLLMPredictor(args.llm, max_new_tokens=40, dtype="bf16", system_prompt=context)}
    for note in args.note:
        llms[note] = TextLLMPredictor(args.llm, max_new_tokens=40, dtype="bf16", system_prompt=f"{context} {note}")
    print("| template | generator note | non-speech: no invented speaker | says no one speaks | of which copy the "
          "description | female: faithful / states female | male: faithful / states male |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for template in args.templates.split(","):
        for note, llm in llms.items():
            requests = [Request(id=r["id"], text=questions[i % len(questions)], audios=["-"],
                                audio_text=render_description(r, template)) for i, r in enumerate(chosen)]
            replies = [reply for start in range(0, len(requests), 16) for reply in llm.predict(requests[start:start + 16])]
            count = {"none": 0, "says": 0, "copies": 0, "female": [0, 0], "male": [0, 0]}
            for row, request, reply in zip(chosen, requests, replies, strict=True):
                if row["attributes"].get("contains_speech") is False:
                    invented = invents_a_speaker(reply)
                    says = not invented and says_no_speech(reply)
                    count["none"] += not invented
                    count["says"] += says
                    count["copies"] += says and copies_description(reply, request.audio_text, row.get("transcript"))
                else:
                    label = row["attributes"]["gender"]
                    verdict = DEFAULT_VOCABULARIES["gender"].judge(label, response_text_for_matching(reply, row.get("transcript")))
                    count[label][0] += unfaithful_reason(row | {"response": reply}) is None
                    count[label][1] += bool(verdict and verdict[0] and not verdict[1])
            print(f"| {template} | {note or '-'} | {count['none']}/{len(sound)} | {count['says']}/{len(sound)} | "
                  f"{count['copies']}/{count['says']} | "
                  f"{count['female'][0]}/{len(female)} / {count['female'][1]}/{len(female)} | "
                  f"{count['male'][0]}/{len(male)} / {count['male'][1]}/{len(male)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
