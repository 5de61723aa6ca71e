"""The field helper every config dataclass uses: help text and the allowed values next to a field.

Separate from :mod:`speechllm.config.schema` so that section modules the run config includes
(``config/describe.py``) and the schema can both import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Precision = Literal["fp32", "bf16", "fp16", "auto"]

# A bound of a Range: a number, or the name of a sibling field whose value is the bound.
Bound = int | float | str


@dataclass(frozen=True)
class Range:
    """The values a field accepts, declared next to the field (``_f(..., ge=1)``) and checked by
    the one generic validator in :mod:`speechllm.config.loader` when a config is loaded.

    ``ge``/``gt``/``le``/``lt`` bound a number; a string bound names a sibling field
    (``lt="ceiling_hz"``). For a list the bounds apply to each item, for a mapping to each value.
    ``length`` is the number of items (an int, or a sibling list field's name). ``choices`` is
    ``"module:attribute"`` naming the allowed strings (a sequence or a function returning one;
    for a mapping: its keys), imported only when the value is not the field's default, so that
    loading a config does not import torch.
    """

    ge: Bound | None = None
    gt: Bound | None = None
    le: Bound | None = None
    lt: Bound | None = None
    length: int | str | None = None
    choices: str | None = None

    def bounds(self) -> list[tuple[str, Bound]]:
        """The ``(operator, bound)`` pairs that are set, lower bounds first."""
        pairs = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
        return [(op, b) for op, b in pairs if b is not None]

    def __str__(self) -> str:
        """Human form without sibling values, e.g. ``>= 0 and < 1`` (``config fields``)."""
        text = " and ".join(f"{op} {b}" for op, b in self.bounds())
        if self.length is not None:
            text = f"{self.length} values" + (f", each {text}" if text else "")
        return text


def _f(default, help: str, *, ge: Bound | None = None, gt: Bound | None = None,  # noqa: A002 - 'help' mirrors argparse
       le: Bound | None = None, lt: Bound | None = None, length: int | str | None = None,
       choices: str | None = None, on_resume: str | None = None, **kw):
    """A dataclass field with help text and, optionally, its allowed values (see :class:`Range`;
    mutable defaults go through default_factory). Every config dataclass of the project uses
    it, so ``iter_field_help`` documents them all and ``check_config`` checks them all.

    ``on_resume`` (model, data and train fields): why the field may differ from the checkpoint's
    when a run is resumed; ``train --resume`` refuses a change of any field without it
    (:mod:`speechllm.train.resume_settings`, docs/training.md)."""
    metadata: dict = {"help": help}
    if on_resume is not None:
        metadata["on_resume"] = on_resume
    if any(v is not None for v in (ge, gt, le, lt, length, choices)):
        metadata["range"] = Range(ge=ge, gt=gt, le=le, lt=lt, length=length, choices=choices)
    if isinstance(default, (list, dict)):
        import copy

        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata, **kw)
    return field(default=default, metadata=metadata, **kw)
