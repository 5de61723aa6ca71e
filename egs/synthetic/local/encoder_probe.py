"""Where do gender, accent and speech vs non-speech get lost? Linear probes on what the LLM is given.

For each clip: the frozen Whisper encoder's hidden states (each tapped layer and the last one),
mean-pooled over real frames, and the trained adapter's output vectors, mean-pooled. A logistic
regression (standardised features) is fitted on the training split and scored on the test
split's groups (natural/robotic, seen/held-out voices) and on real recordings (``--real``
folders with a LABELS.tsv, as in tests/data/audio). If a probe reads gender from the encoder
but not from the adapter output, the adapter loses it; if it reads it from the adapter output
but the speech model still answers wrongly, the LLM side (targets, training) does.

    python egs/synthetic/local/encoder_probe.py --model exp/synthetic/train/final \
        --train dump/synthetic/data/train.jsonl --test dump/synthetic/data/test.jsonl \
        --real tests/data/audio --real dump/synthetic/debian_sounds --out exp/synthetic/eval/encoder_probe.json
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "mini" / "local"))
from attribute_probe import group_of, is_speech, read_rows  # noqa: E402  (the probe's grouping)


def real_rows(folder: Path) -> list[dict]:
    rows = []
    with (folder / "LABELS.tsv").open(encoding="utf-8") as f:
        for label in csv.DictReader(f, delimiter="\t"):
            speech = label["kind"] == "speech"
            rows.append({"id": Path(label["file"]).stem, "audio": str((folder / label["file"]).resolve()),
                         "attributes": {"contains_speech": speech, **({"gender": label["gender"]} if speech else {})},
                         "real": True, "real_source": folder.name})
    return rows


def features(model, rows: list[dict], root: Path, batch: int = 8) -> dict[str, np.ndarray]:
    """Mean-pooled encoder layers and adapter output per row (first 30 s window)."""
    import torch

    from speechllm.audio import load_audio

    out: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    taps = model.encoder.layers
    for start in range(0, len(rows), batch):
        waves = [load_audio(root / r["audio"] if not Path(r["audio"]).is_absolute() else r["audio"])[:480000]
                 for r in rows[start:start + batch]]
        with torch.inference_mode():
            enc = model.encoder.encode(waves, need_final=True)
            vectors, mask = model.adapter(enc.taps, enc.valid_frames)  # (windows, queries, llm width)
            vectors = vectors.float()
        for i, n in enumerate(enc.valid_frames):
            for layer, h in zip(taps, enc.taps, strict=True):
                out[f"encoder layer {layer}"].append(h[i, :n].float().mean(0).numpy())
            out[f"encoder layer {model.encoder.num_layers} (not tapped)"].append(enc.final[i, :n].float().mean(0).numpy())
            out["adapter output"].append(vectors[i][mask[i]].mean(0).numpy())
    return {k: np.stack(v) for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True, type=Path)
    ap.add_argument("--test", required=True, type=Path)
    ap.add_argument("--real", type=Path, action="append", default=[], help="folder with LABELS.tsv (repeatable)")
    ap.add_argument("--max-train", type=int, default=400, help="training rows used (a seeded sample)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from speechllm.models import SpeechLLM

    model = SpeechLLM.from_pretrained(args.model)
    model.eval()
    train = read_rows(args.train)
    if len(train) > args.max_train:
        keep = np.random.default_rng(0).choice(len(train), args.max_train, replace=False)
        train = [train[i] for i in sorted(keep)]
    seen = {r.get("speaker") for r in train} - {None}
    test = read_rows(args.test)
    real = [r for folder in args.real for r in real_rows(folder)]
    f_train = features(model, train, args.train.parent)
    f_test = features(model, test + real, args.test.parent)
    everything = test + real
    results: dict = {}
    # Accent: the label is the voice's (espeak-ng language for robotic voices, the phoneme set en-us/
    # en-gb for Kokoro), so on held-out voices it measures whether accent, not the voice, is read.
    tasks = {"gender": lambda r: r["attributes"].get("gender") if is_speech(r) else None,
             "accent": lambda r: r["attributes"].get("accent") if is_speech(r) else None,
             "speech vs non-speech": lambda r: "speech" if is_speech(r) else "non-speech"}
    for task, label_of in tasks.items():
        y_train = [label_of(r) for r in train]
        fit_rows = [i for i, y in enumerate(y_train) if y is not None]
        results[task] = {}
        for name in f_train:
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
            clf.fit(f_train[name][fit_rows], [y_train[i] for i in fit_rows])
            predicted = clf.predict(f_test[name])
            groups: dict[str, list[bool]] = collections.defaultdict(list)
            for r, p in zip(everything, predicted, strict=True):
                y = label_of(r)
                if y is None:
                    continue
                group = group_of(r, seen)
                groups[group].append(p == y)
            results[task][name] = {g: {"n": len(v), "accuracy": round(sum(v) / len(v), 3)} for g, v in groups.items()}

    for task, per_feature in results.items():
        groups = sorted({g for v in per_feature.values() for g in v})
        print(f"\n{task}: logistic regression on mean-pooled features, fitted on {len(train)} training rows\n")
        print("| features | " + " | ".join(f"{g} (n={next(v[g]['n'] for v in per_feature.values() if g in v)})"
                                            for g in groups) + " |")
        print("| --- | " + " | ".join("---:" for _ in groups) + " |")
        for name, per_group in per_feature.items():
            print(f"| {name} | " + " | ".join(f"{per_group[g]['accuracy']:.3f}" if g in per_group else "-"
                                              for g in groups) + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
