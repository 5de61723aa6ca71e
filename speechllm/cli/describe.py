"""``speechllm describe``: annotate a manifest's audio and render each row's seed description."""

from __future__ import annotations

import argparse
from dataclasses import fields


def register(sub: argparse._SubParsersAction) -> None:
    from speechllm.cli import add_recipe_options
    from speechllm.config.loader import range_arg

    p = sub.add_parser(
        "describe",
        help="measure/predict attributes (duration, VAD, volume, SNR, gender, pitch, ASR, rate) and render seed descriptions",
        description="Reads IN.jsonl, writes OUT.jsonl (resumable: re-run the same command after an "
        "interruption; OUT.describe.yaml records the settings, and a rerun with other settings is refused). "
        "Rows whose audio cannot be used go to OUT.jsonl.skipped.jsonl with the reason.",
    )
    p.add_argument("input", metavar="IN.jsonl", nargs="?", help="input manifest")
    p.add_argument("output", metavar="OUT.jsonl", nargs="?", help="output manifest (appended to when it exists, see --restart)")
    p.add_argument("--annotators", "-a", default=None,
                   help="comma-separated annotators in order (default: duration,vad,volume,snr,gender,pitch,asr,speaking_rate); "
                   "`speechllm describe --list` shows them")
    p.add_argument("--classifier", action="append", default=[], metavar="ATTRIBUTE=MODEL",
                   help="run an HF audio-classification model and store its top label as ATTRIBUTE "
                   "(adds the hf-classifier annotator); repeatable")
    p.add_argument("--asr-model", default=None, help="Whisper model for missing transcripts (default: offline:whisper-tiny.en)")
    p.add_argument("--template", default=None, help="description template id (default: desta2-v1)")
    p.add_argument("--attributes", default=None,
                   help="comma-separated attributes shown in the description, in order (default: the template's)")
    p.add_argument("--overwrite-labels", action="store_true", help="let annotators replace corpus/user labels")
    add_recipe_options(p, "its describe: section applies (thresholds, annotators, ...)",
                       "describe.pitch.male_high_above=160")
    p.add_argument("--jobs", "-j", type=range_arg(int, ge=1), default=1, help="worker processes (default: 1)")
    p.add_argument("--shard", default=None, metavar="i/N", help="process only shard i of N (0-based, by id hash)")
    p.add_argument("--restart", action="store_true",
                   help="discard OUT.jsonl and start over instead of resuming (needed to change the "
                   "settings of an existing OUT.jsonl)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--list", action="store_true", help="list the annotators and exit")
    p.set_defaults(func=_run)


def load_describe_config(path: str | None, overrides: list[str]):
    """The ``describe`` section of a recipe plus dotted overrides.

    Before the recipe held a ``describe:`` section, ``--config`` took a file of bare
    DescribeConfig fields and overrides were ``pitch.male_high_above=160``: both still load, with a
    one-line warning naming the new form."""
    import logging

    from speechllm.config import RunConfig, apply_overrides, from_dict
    from speechllm.config.describe import DescribeConfig
    from speechllm.config.loader import migrate_moved_keys, moved_override, read_yaml

    log = logging.getLogger(__name__)
    sections = {f.name for f in fields(RunConfig)}
    own = {f.name for f in fields(DescribeConfig)}
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    if data and not set(data) & sections:  # a file of bare DescribeConfig fields
        log.warning("%s: describe's settings now go under a describe: section of the recipe; this file still "
                    "loads, move its keys under describe:", path)
        data = {"describe": data}
    data = migrate_moved_keys(RunConfig, data, source)
    given = []
    for text in overrides:
        key = text.partition("=")[0].strip()
        if key.split(".")[0] in own and key.split(".")[0] not in sections:
            log.warning("override %s: describe's keys are now under describe. (describe.%s); the old key "
                        "still works", text, key)
            text = "describe." + text.lstrip()
        given.append(moved_override(RunConfig, text))
    if given:
        data = apply_overrides(data, given)
        source += " + command-line overrides"
    return from_dict(RunConfig, data, source).describe


def _config_from_args(args: argparse.Namespace):
    from speechllm.errors import ConfigError

    cfg = load_describe_config(args.config, list(args.overrides))
    if args.annotators:
        cfg.annotators = [a.strip() for a in args.annotators.split(",") if a.strip()]
    for spec in args.classifier:
        attribute, sep, model = spec.partition("=")
        if not sep or not attribute or not model:
            raise ConfigError(f"--classifier {spec!r}: expected ATTRIBUTE=MODEL, e.g. emotion=./my-emotion-model")
        cfg.classifiers[attribute.strip()] = model.strip()
    if cfg.classifiers and "hf-classifier" not in cfg.annotators:
        cfg.annotators.append("hf-classifier")
    if args.asr_model:
        cfg.asr_model = args.asr_model
    if args.template:
        cfg.template = args.template
    if args.attributes:
        cfg.description_attributes = [a.strip() for a in args.attributes.split(",") if a.strip()]
    if args.overwrite_labels:
        cfg.overwrite_labels = True
    return cfg


def _run(args: argparse.Namespace) -> int:
    import sys

    if args.list:
        from speechllm.describe.annotators import available_annotators

        for name, cls in sorted(available_annotators().items()):
            print(f"{name:16s} {cls.description}")
        return 0
    from pathlib import Path

    from speechllm.errors import SpeechLLMError

    if not args.input or not args.output:
        raise SpeechLLMError("expected IN.jsonl and OUT.jsonl (or --list)")
    from speechllm.describe.annotators import build_annotators
    from speechllm.describe.pipeline import describe_manifest
    from speechllm.describe.renderer import get_template
    from speechllm.utils.jsonl import parse_shard

    cfg = _config_from_args(args)
    shard = parse_shard(args.shard)
    build_annotators(list(cfg.annotators), cfg)  # unknown names fail before anything is written
    get_template(cfg.template)
    # describe_manifest writes the resolved config (OUT.describe.yaml) once it has checked that
    # it matches the one an existing OUT.jsonl was described with.
    summary = describe_manifest(
        args.input, Path(args.output), cfg, jobs=args.jobs, shard=shard, resume=not args.restart,
        progress=not args.no_progress,
    )
    for line in summary.lines():
        print(line, file=sys.stderr)
    return 0
