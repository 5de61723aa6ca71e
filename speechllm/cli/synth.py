"""``speechllm synth``: build the offline synthetic corpus (Harvard sentences spoken by flite and espeak-ng,
optionally natural Kokoro/Piper voices, non-speech clips, noise and reverberation)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="build the offline synthetic corpus: Harvard sentences spoken by flite and espeak-ng voices",
        description="Writes OUT_DIR/wav/*.wav and OUT_DIR/{train,dev,test,all}.jsonl. Test sentences "
        "never occur in train/dev; half of the test rows use voices held out of training.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to create (must not exist, or be empty)")
    p.add_argument("--num", "-n", type=int, default=200, help="number of utterances (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same num + seed = same corpus (default: 0)")
    p.add_argument("--sentences", default=None, metavar="FILE",
                   help="sentence file, one a line (default: the 720 Harvard sentences shipped with speechllm)")
    p.add_argument("--jobs", "-j", type=int, default=2, help="parallel TTS processes (default: 2)")
    g = p.add_argument_group(
        "natural voices, non-speech and acoustic conditions (docs/synthetic-corpus.md; all 0: the "
        "flite/espeak-ng corpus)")
    g.add_argument("--natural", type=float, default=0.0, metavar="SHARE",
                   help="share of rows spoken by natural voices: Kokoro-82M and Piper joe (default: 0)")
    g.add_argument("--nonspeech", type=float, default=0.0, metavar="SHARE",
                   help="share of non-speech rows: noise, tones, beeps, DTMF, music, ... (default: 0)")
    g.add_argument("--noisy", type=float, default=0.0, metavar="SHARE",
                   help="share of speech rows mixed with background noise at a labelled SNR (default: 0)")
    g.add_argument("--reverb", type=float, default=0.0, metavar="SHARE",
                   help="share of speech rows in a simulated room, C50 labelled (default: 0)")
    g.add_argument("--converted", type=float, default=0.0, metavar="SHARE",
                   help="share of natural rows spoken by a gender-converted voice (a voice of the other gender "
                        "with F0 and formants moved), so that each voice speaks for both genders (default: 0)")
    g.add_argument("--balance-gender", action="store_true",
                   help="robotic rows draw their gender 50/50 as natural rows do (else a uniform pick among the "
                        "flite/espeak-ng voices, most of them male)")
    g.add_argument("--engines", default="kokoro,piper",
                   help="natural engines to use, comma-separated (default: kokoro,piper)")
    g.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="cache of natural-voice synthesis (default: $SPEECHLLM_HOME/cache/tts)")
    p.add_argument("--splits", default="train,dev,test",
                   help="splits to render, comma-separated; their rows are those of the full corpus "
                        "(e.g. --num 4000 --splits test: a larger test set) (default: train,dev,test)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from speechllm.data.synth import CorpusMix, build_synthetic_corpus

    mix = CorpusMix(natural=args.natural, nonspeech=args.nonspeech, noisy=args.noisy, reverb=args.reverb,
                    converted=args.converted, balance_gender=args.balance_gender, engines=tuple(e.strip() for e in args.engines.split(",") if e.strip()))
    counts = build_synthetic_corpus(
        args.out_dir, num=args.num, seed=args.seed, sentences_path=args.sentences,
        jobs=args.jobs, overwrite=args.overwrite, progress=not args.no_progress,
        mix=mix, cache_dir=args.cache_dir, splits=tuple(x.strip() for x in args.splits.split(",") if x.strip()),
    )
    print(f"{args.out_dir}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + " utterances")
    return 0
