"""Attribute annotators, the seed-description renderer and the ``describe`` stage.

- :func:`render_description` — THE seed-description function (every stage renders through it);
- :func:`describe_manifest` — annotate a manifest (resumable, sharded, multi-process);
- :class:`DescribeConfig` — thresholds and options (documented bins);
- :func:`available_annotators` / :func:`register_annotator` — the annotator registry.
"""

from speechllm.config.describe import DescribeConfig
from speechllm.describe.renderer import (
    DEFAULT_TEMPLATE,
    TEMPLATES,
    DescriptionTemplate,
    get_template,
    render_description,
)

__all__ = [
    "DEFAULT_TEMPLATE",
    "TEMPLATES",
    "DescribeConfig",
    "DescribeSummary",
    "DescriptionTemplate",
    "UtteranceDescriber",
    "available_annotators",
    "describe_manifest",
    "get_template",
    "register_annotator",
    "render_description",
]


def __getattr__(name: str):
    # The pipeline and annotators import audio/manifest code; load them on first use so that
    # `from speechllm.describe import render_description` stays light.
    if name in ("describe_manifest", "DescribeSummary", "UtteranceDescriber"):
        from speechllm.describe import pipeline

        return getattr(pipeline, name)
    if name in ("available_annotators", "register_annotator"):
        from speechllm.describe.annotators import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
