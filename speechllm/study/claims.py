"""The seed papers' forgetting claims, checked seed by seed on the study's cells (docs/forgetting.md).

Each check compares two cells (or a cell's merge points) on the same seed, so a claim reads
"reproduced on k of n seeds" with the mean effect and what it cost in learning beside it. The
tests are written down here, once, and the study writes their verdicts to ``OUT/claims.md``:

own words      KL-to-base of LoRA on a source in the model's own words < on gold (human) answers
replay         KL with ~5% (and 25%) replay <= half of plain LoRA's ("removes most forgetting")
LoRA/layers    LoRA's KL < the last layers' (forgets less); LoRA's target loss > theirs (learns less)
STM            on gold targets STM lowers KL; on self-generated ones it does not
EWC/L2-SP      KL below plain LoRA's and target loss above it (learning traded for retention)
merge          KL rises with λ through 0.25, 0.5, 0.75, 1 (a curve from the base to the tuned model)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Entry = dict[str, Any]


def per_seed(entries: Sequence[Entry], cell: str, metric: str, merge: float = 1.0) -> dict[int, float]:
    """``metric`` of ``cell`` at merge λ ``merge``, by seed (empty where the cell did not run)."""
    for e in entries:
        if e["cell"] == cell and e["merge"] == merge:
            return {s: v for s, v in zip(e["seeds"], e[metric + "_per_seed"], strict=True) if v is not None}
    return {}


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def verdict(k: int, n: int) -> str:
    if n == 0:
        return "not run"
    if k == n:
        return f"**reproduced**, {k} of {n} seeds"
    return f"partly, {k} of {n} seeds" if k else f"**not reproduced**, 0 of {n} seeds"


def compare(entries: Sequence[Entry], cell: str, ref: str, test: Callable[[float, float], bool],
            metric: str = "kl_to_base") -> dict[str, Any]:
    """Seeds where ``test(cell's metric, ref's metric)`` holds, the mean ratio cell/ref of the metric,
    and the learning beside it (mean accuracy through the audio and target loss, cell minus ref)."""
    a, b = per_seed(entries, cell, metric), per_seed(entries, ref, metric)
    seeds = sorted(set(a) & set(b))
    k = sum(bool(test(a[s], b[s])) for s in seeds)
    ratios = [a[s] / b[s] for s in seeds if b[s] > 0]
    learn = {}
    for m in ("acc_audio", "target_loss"):
        x, y = per_seed(entries, cell, m), per_seed(entries, ref, m)
        both = sorted(set(x) & set(y) & set(seeds))
        learn[m] = _mean([x[s] - y[s] for s in both])
    return {"k": k, "n": len(seeds), "ratio": _mean(ratios), "d_acc": learn["acc_audio"],
            "d_loss": learn["target_loss"]}


def _less(x: float, y: float) -> bool:
    return x < y


def _not_less(x: float, y: float) -> bool:
    return x >= y


def _half_or_less(x: float, y: float) -> bool:
    return x <= 0.5 * y


def _more(x: float, y: float) -> bool:
    return x > y


def merge_curve(entries: Sequence[Entry], cell: str, lambdas: Sequence[float] = (0.25, 0.5, 0.75, 1.0)) -> dict:
    """Seeds on which KL-to-base rises strictly with λ; the KL and target-loss ratios at λ 0.5."""
    kl = {lam: per_seed(entries, cell, "kl_to_base", lam) for lam in lambdas}
    seeds = sorted(set.intersection(*(set(v) for v in kl.values()))) if all(kl.values()) else []
    k = sum(all(kl[a][s] < kl[b][s] for a, b in zip(lambdas, lambdas[1:])) for s in seeds)
    loss = {lam: per_seed(entries, cell, "target_loss", lam) for lam in (0.5, 1.0)}
    ratio = _mean([kl[0.5][s] / kl[1.0][s] for s in seeds if kl[1.0][s] > 0])
    loss_ratio = _mean([loss[0.5][s] / loss[1.0][s] for s in seeds if s in loss[0.5] and loss[1.0].get(s)])
    return {"k": k, "n": len(seeds), "ratio": ratio, "loss_ratio": loss_ratio}


def _fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def _row(claim: str, test: str, r: dict[str, Any], effect: str, cost: str) -> str:
    return f"| {claim} | {test} | {verdict(r['k'], r['n'])} | {effect} | {cost} |"


def _learning(r: dict[str, Any], same_targets: bool = True) -> str:
    # Target losses of different sources are losses on different texts: not compared.
    loss = f", Δtarget loss {_fmt(r['d_loss'], '+.3f')}" if same_targets else " (target losses: other texts)"
    return f"Δacc {_fmt(r['d_acc'], '+.3f')}{loss}"


def claims_markdown(entries: Sequence[Entry]) -> str:
    """The claims table (markdown) from the study's entries (:func:`speechllm.study.forgetting.collect`)."""
    lines = ["| claim | test, per seed | verdict | effect (mean over seeds) | learning beside it (cell − reference) |",
             "|---|---|---|---|---|"]
    for src in ("self", "verified", "minchange", "paraphrase"):
        r = compare(entries, f"{src}.lora.plain", "gold.lora.plain", _less)
        lines.append(_row("own words forget less than human answers", f"KL {src}.lora < gold.lora", r,
                          f"KL {_fmt(r['ratio'], '.2f', 'x')}", _learning(r, same_targets=False)))
    for ctrl in ("replay5-sampled", "replay5-pseudo", "replay25-sampled", "replay25-pseudo"):
        r = compare(entries, f"gold.lora.{ctrl}", "gold.lora.plain", _half_or_less)
        lines.append(_row("~5% replay removes most forgetting", f"KL {ctrl} <= 0.5 x plain", r,
                          f"KL {_fmt(r['ratio'], '.2f', 'x')}", _learning(r)))
    for src in ("gold", "self"):
        r = compare(entries, f"{src}.lora.plain", f"{src}.layers.plain", _less)
        lines.append(_row("LoRA forgets less than training layers", f"KL {src}.lora < {src}.layers", r,
                          f"KL {_fmt(r['ratio'], '.2f', 'x')}", _learning(r)))
        r = compare(entries, f"{src}.lora.plain", f"{src}.layers.plain", _more, metric="target_loss")
        lines.append(_row("LoRA learns less than training layers", f"target loss {src}.lora > {src}.layers", r,
                          f"target loss {_fmt(r['ratio'], '.2f', 'x')}", _learning(r)))
    r = compare(entries, "gold.lora.stm2.5", "gold.lora.plain", _less)
    lines.append(_row("STM reduces forgetting on gold targets", "KL gold.lora.stm2.5 < gold.lora", r,
                      f"KL {_fmt(r['ratio'], '.2f', 'x')}", _learning(r)))
    r = compare(entries, "self.lora.stm2.5", "self.lora.plain", _not_less)
    lines.append(_row("... and not on self-generated ones", "KL self.lora.stm2.5 >= self.lora", r,
                      f"KL {_fmt(r['ratio'], '.2f', 'x')}", _learning(r)))
    for ctrl, ref in (("l2sp1", "gold.lora.plain"), ("l2sp10", "gold.lora.plain"), ("ewc1", "gold.lora.plain"),
                      ("ewc10", "gold.lora.plain"), ("l2sp10", "gold.layers.plain"), ("ewc10", "gold.layers.plain")):
        scope = ref.split(".")[1]
        cell = f"gold.{scope}.{ctrl}"
        kl = compare(entries, cell, ref, _less)
        loss = compare(entries, cell, ref, _more, metric="target_loss")
        a, b = per_seed(entries, cell, "kl_to_base"), per_seed(entries, ref, "kl_to_base")
        x, y = per_seed(entries, cell, "target_loss"), per_seed(entries, ref, "target_loss")
        seeds = sorted(set(a) & set(b) & set(x) & set(y))
        both = {"k": sum(a[s] < b[s] and x[s] > y[s] for s in seeds), "n": len(seeds)}
        lines.append(_row("EWC / L2-SP trade learning for retention", f"{cell}: KL lower and target loss higher "
                          f"than {ref}", both, f"KL {_fmt(kl['ratio'], '.3f', 'x')}",
                          f"target loss {_fmt(loss['ratio'], '.2f', 'x')}, Δacc {_fmt(kl['d_acc'], '+.3f')}"))
    for cell in ("gold.lora.plain", "self.lora.plain", "gold.layers.plain"):
        r = merge_curve(entries, cell)
        lines.append(_row("merge λ traces a curve from base to tuned", f"{cell}: KL rises with λ 0.25/0.5/0.75/1", r,
                          f"KL at λ 0.5: {_fmt(r['ratio'], '.2f', 'x')}",
                          f"target loss at λ 0.5: {_fmt(r['loss_ratio'], '.2f', 'x')}"))
    return "\n".join(lines) + "\n"
