"""The issue's measures, one row per probe: gender on held-out natural voices and on real speech,
and non-speech answered without an invented speaker, from the replies that
``attribute_probe.py`` keeps (``replies`` in its JSON), re-scored with the current rules so that
probes run at different times compare.

    python egs/mini/local/probe_summary.py exp/mini/probe/attribute_probe.json [more.json ...]
    python egs/mini/local/probe_summary.py --voices exp/mini/probe/attribute_probe.json   # per voice family

Columns: held-out natural voices (Piper joe, the ``jf_tebukuro`` pack and their converted
twins), real speech (LibriSpeech readers and the CMU ARCTIC man; the ALSA woman apart), non-speech
(synthetic and real) with no invented speaker / saying that no one speaks.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attribute_probe import names_only, nonspeech_verdict  # noqa: E402  (the probe's own rules)

GENDERS = ["female", "male"]


def family(voice: str, group: str) -> str:
    """Where a voice comes from: the source pack or engine, converted or not, seen or held out."""
    if group.startswith("real"):
        return group
    if "piper" in voice:
        return "held out: Piper joe" + (" as a woman" if "as-female" in voice else "")
    if "tebukuro" in voice:
        return "held out: jf_tebukuro" + (" as a man" if "as-male" in voice else "")
    if "kokoro" in voice:
        if "kumo" in voice:
            return "seen: jm_kumo" + (" as a woman" if "as-female" in voice else "")
        return "seen: female packs" + (" as men" if "as-male" in voice else "")
    return "robotic, " + ("held out" if group.startswith("held-out") else "seen")


def summarise(path: Path) -> dict[str, tuple[int, int]]:
    replies = json.loads(path.read_text())["gender"]["speech model"]["replies"]
    counts: dict[str, list[bool]] = collections.defaultdict(list)
    for row in replies.values():
        reply, group, label = row["reply"], row["group"], row["label"]
        if label == "non-speech":
            no_speaker, says = nonspeech_verdict(reply)
            counts["non-speech: no invented speaker"].append(no_speaker)
            counts["non-speech: says no one speaks"].append(says)
            continue
        right = names_only(reply, label, GENDERS)
        if group.startswith("natural, held-out"):
            counts["held-out natural voices"].append(right)
        elif group == "real speech (debian_sounds)":
            counts["real: ALSA woman"].append(right)
        elif group.startswith("real speech"):
            counts["real: LibriSpeech + ARCTIC"].append(right)
        counts[f"voice: {family(row.get('voice') or '', group)} ({label})"].append(right)
    return {k: (sum(v), len(v)) for k, v in counts.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("probes", nargs="+", type=Path, help="attribute_probe.json files")
    ap.add_argument("--voices", action="store_true", help="one column per voice family instead")
    args = ap.parse_args()
    tables = {str(p): summarise(p) for p in args.probes}
    measures = sorted({k for t in tables.values() for k in t if k.startswith("voice: ") == args.voices})

    def cell(table: dict, key: str) -> str:
        return f"{table[key][0]}/{table[key][1]}" if key in table else "-"

    if args.voices:  # one row per voice family, one column per probe
        print("| voices (label) | " + " | ".join(tables) + " |")
        print("| --- | " + " | ".join("---:" for _ in tables) + " |")
        for key in measures:
            print(f"| {key.removeprefix('voice: ')} | " + " | ".join(cell(t, key) for t in tables.values()) + " |")
        return 0
    print("| probe | " + " | ".join(measures) + " |")
    print("| --- | " + " | ".join("---:" for _ in measures) + " |")
    for name, table in tables.items():
        print(f"| {name} | " + " | ".join(cell(table, key) for key in measures) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
