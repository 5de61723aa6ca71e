"""``speechllm prepare CORPUS CORPUS_DIR OUT_DIR``: turn a corpus on disk into a manifest.

Mirrors the Python API: ``speechllm prepare vctk ...`` runs ``data_prep.vctk.prepare_vctk``.
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="import a corpus (LibriSpeech, VCTK, CREMA-D, ...) into OUT_DIR/manifest.jsonl",
        description="Import a corpus into OUT_DIR/manifest.jsonl (+ summary.json). "
        "`speechllm prepare --list` shows the importers, the labels each copies and where to get the corpus.",
    )
    p.add_argument("corpus", nargs="?", metavar="CORPUS", help="importer name (see --list), e.g. librispeech")
    p.add_argument("corpus_dir", nargs="?", metavar="CORPUS_DIR", help="the corpus's folder on disk")
    p.add_argument("out_dir", nargs="?", metavar="OUT_DIR", help="where manifest.jsonl and summary.json go")
    p.add_argument("--list", action="store_true", help="list the importers and exit")
    p.add_argument("--per-split", action="store_true",
                   help="also write OUT_DIR/manifest.<split>.jsonl for each split")
    p.add_argument("--splits", nargs="+", default=None, metavar="SPLIT",
                   help="librispeech: subsets (dev-clean ...); commonvoice: TSV names (train dev test validated ...)")
    p.add_argument("--mic", default=None, choices=["mic1", "mic2", "both"], help="vctk 0.92: which microphone (default mic1)")
    p.add_argument("--labels", default=None, metavar="FILE", help="folder: the CSV/TSV of labels (default: labels.csv/.tsv, metadata.csv/.tsv in the folder)")
    p.add_argument("--allow-pipes", action="store_true",
                   help="kaldi: run 'cmd |' entries of wav.scp. This EXECUTES SHELL CODE from the data dir; use only for data you trust")
    p.add_argument("--root", default=None, metavar="DIR",
                   help="kaldi: folder that relative paths and pipe commands in wav.scp are relative to (default: the recipe folder, two levels above the data dir)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import data_prep  # noqa: F401  (registers the built-in importers)
    from speechllm.data.importers import get_importer, list_importers
    from speechllm.errors import SpeechLLMError

    if args.list:
        for imp in list_importers():
            print(f"{imp.name:12s} {imp.labels}\n{'':12s} source: {imp.source}"
                  + (f"; options: {', '.join('--' + o.replace('_', '-') for o in imp.options)}" if imp.options else ""))
        return 0
    if not (args.corpus and args.corpus_dir and args.out_dir):
        raise SpeechLLMError("usage: speechllm prepare CORPUS CORPUS_DIR OUT_DIR (or --list)")
    importer = get_importer(args.corpus)
    given = {"splits": args.splits, "mic": args.mic, "labels": args.labels,
             "allow_pipes": args.allow_pipes or None, "root": args.root}
    options = {k: v for k, v in given.items() if v is not None}
    foreign = [k for k in options if k not in importer.options]
    if foreign:
        flags = ", ".join("--" + k.replace("_", "-") for k in foreign)
        takes = ", ".join("--" + o.replace("_", "-") for o in importer.options) or "no options"
        raise SpeechLLMError(f"{flags} does not apply to {importer.name} (it takes {takes})")
    prepared = importer.prepare(args.corpus_dir, args.out_dir, **options)
    if args.per_split:
        prepared.write(args.out_dir, per_split=True)
    summary = prepared.summary()
    for split, s in summary["splits"].items():
        print(f"{split:20s} {s['utterances']:8d} utterances {s['hours']:9.2f} h {s['speakers']:6d} speakers")
    for kind, s in summary["skipped"].items():
        print(f"skipped {kind}: {s['count']} (e.g. {', '.join(s['examples'][:3])})")
    print(f"attributes: {json.dumps({k: len(v) for k, v in summary['attributes'].items()})} (distinct values)")
    print("wrote " + ", ".join(str(p) for p in prepared.manifests) + f" and {args.out_dir}/summary.json")
    return 0
