"""Keep only targets faithful to the labels; re-sample the others from the same frozen LLM.

SmolLM2-135M reading a desta2-v2 description answers "The speaker is male." to about half of
the gender questions about a non-speech clip ("No speech. (Sound: music, ...)"), invents an
accent for every accent question about one, and answers "No, there is no speech" to speech
rows too. Trained on such targets, the model would learn to invent speakers. So after stage 3
each target is checked against the row's trusted labels (corpus/user provenance):

- non-speech rows (``contains_speech`` false): the response must name no gender and no accent;
- speech rows: the response must not contradict the gender or accent label, nor say there is
  no speech (``speechllm.generate.faithful.unfaithful_reason``).

With ``--require-no-speaker`` a non-speech target must also say that no one speaks ("There is no
speaker."); answers that only echo the description or say "the gender is unknown" are re-sampled.
With ``--reject-copies`` a target that copies the description back (its ``<start_audio>[00:00:00
- ...`` markup, its ``(Volume: ..., Duration: ...)`` fields, or most of its words verbatim:
``speechllm.generate.faithful.copies_description``) is re-sampled too; without it such targets
are kept and only counted (``kept_copies`` in TARGETS.faithful.json).
With ``--nonspeech-copies K`` each non-speech row gets K targets (copies under the ids ID-c2 ...,
greedy, each drawing its own question), so that speaker questions answered "no speaker" are not
swamped by the speech rows' "male"/"female" (a 15% non-speech corpus gives about a third).

Rejected rows are generated again by the same LLM with sampling (``--temperature``) and another
seed per round, which also draws another question from the prompt pool; after ``--rounds``
rounds the rows still unfaithful are left out (written to TARGETS.unfaithful.jsonl). The
targets stay the LLM's own words; only which of its answers are kept is chosen.

    python egs/synthetic/local/faithful_targets.py DESCRIBED.jsonl TARGETS.jsonl [--rounds 4] \
        [--require-no-speaker] [--reject-copies] [--nonspeech-copies 3]

The re-runs use the resolved config stage 3 wrote beside TARGETS.jsonl (TARGETS.config.yaml).
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_rows(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("described", type=Path, help="DESCRIBED.jsonl the targets were generated from")
    ap.add_argument("targets", type=Path, help="TARGETS.jsonl from `speechllm generate` (rewritten in place)")
    ap.add_argument("--rounds", type=int, default=4, help="re-sampling rounds for rejected rows (default 4)")
    ap.add_argument("--temperature", type=float, default=0.8, help="sampling temperature of the re-runs")
    ap.add_argument("--top-p", type=float, default=0.95, help="nucleus mass of the re-runs")
    ap.add_argument("--require-no-speaker", action="store_true",
                    help="non-speech targets must also say that no one speaks (not merely name no speaker)")
    ap.add_argument("--reject-copies", action="store_true",
                    help="re-sample targets that copy the description back instead of answering (else only counted)")
    ap.add_argument("--nonspeech-copies", type=int, default=1,
                    help="targets per non-speech row (extra copies get ids ID-cK, so another question is drawn); "
                         "balances speaker questions answered 'no speaker' against the speech rows' answers")
    args = ap.parse_args()

    config = args.targets.with_suffix(".config.yaml")
    if not config.is_file():
        raise SystemExit(f"{config} not found: run `speechllm generate` (stage 3) first; it writes the config")
    from speechllm.generate.faithful import copies_description, unfaithful_reason

    described = {r["id"]: r for r in read_rows(args.described)}
    rows = read_rows(args.targets)

    def judge(row: dict) -> str | None:
        return unfaithful_reason(row, require_no_speaker=args.require_no_speaker, reject_copies=args.reject_copies)

    with tempfile.TemporaryDirectory(prefix="faithful-") as tmp:
        def generate(subset_rows: list[dict], name: str, sample_seed: int | None) -> list[dict]:
            subset, out = Path(tmp) / f"in-{name}.jsonl", Path(tmp) / f"out-{name}.jsonl"
            write_rows(subset, subset_rows)
            # The resolved config stage 3 wrote beside its output: same LLM, prompt pool, lengths.
            cmd = [sys.executable, "-m", "speechllm", "generate", str(subset), str(out), "--config", str(config),
                   "--no-progress"]
            if sample_seed is not None:
                cmd += ["--seed", str(sample_seed), "--temperature", str(args.temperature), "--top-p", str(args.top_p)]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            return read_rows(out)

        # Extra targets for non-speech rows: the same clip under another id, so the pool draws
        # another question (greedy, as stage 3); the copies share the clip's audio and features.
        copies = [described[r["id"]] | {"id": f"{r['id']}-c{k}"} for k in range(2, args.nonspeech_copies + 1)
                  for r in rows if described.get(r["id"], {}).get("attributes", {}).get("contains_speech") is False]
        if copies:
            described.update({c["id"]: c for c in copies})
            rows += generate(copies, "copies", None)
        by_id = {r["id"]: r for r in rows}
        verdicts = {r["id"]: judge(r) for r in rows}
        first_reasons = collections.Counter(v for v in verdicts.values() if v)
        history = [{"round": 0, "rejected": sum(v is not None for v in verdicts.values())}]
        for rnd in range(1, args.rounds + 1):
            todo = [i for i, v in verdicts.items() if v is not None and i in described]
            if not todo:
                break
            for r in generate([described[i] for i in todo], f"round{rnd}", rnd):
                verdict = judge(r)
                if verdict is None or verdicts.get(r["id"]) is not None:
                    by_id[r["id"]], verdicts[r["id"]] = r, verdict
            history.append({"round": rnd, "rejected": sum(v is not None for v in verdicts.values())})
    kept = [by_id[r["id"]] for r in rows if verdicts[r["id"]] is None]
    dropped = [by_id[r["id"]] | {"unfaithful": verdicts[r["id"]]} for r in rows if verdicts[r["id"]] is not None]
    write_rows(args.targets, kept)
    write_rows(args.targets.with_suffix(".unfaithful.jsonl"), dropped)
    kinds = collections.Counter("non-speech" if described.get(r["id"], r).get("attributes", {}).get("contains_speech")
                                is False else "speech" for r in kept)
    copied = collections.Counter(
        "non-speech" if described.get(r["id"], r).get("attributes", {}).get("contains_speech") is False else "speech"
        for r in kept if copies_description(r.get("response", ""), r.get("description"), r.get("transcript")))
    report = {"rows": len(rows), "nonspeech_copies": args.nonspeech_copies,
              "require_no_speaker": args.require_no_speaker, "reject_copies": args.reject_copies,
              "kept": len(kept), "dropped": len(dropped), "kept_by_kind": dict(kinds),
              "kept_copies": dict(copied),
              "first_pass_reasons": dict(first_reasons),
              "final_reasons": dict(collections.Counter(d["unfaithful"] for d in dropped)), "rounds": history}
    args.targets.with_suffix(".faithful.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"faithful targets {args.targets}: kept {len(kept)} of {len(rows)} ({dict(kinds)}; copying the "
          f"description: {dict(copied)}); "
          f"rejected per round {[h['rejected'] for h in history]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
