"""The forgetting study's claim checks (speechllm.study.claims): seed-by-seed counts, effects and
learning beside them, on hand-made results whose answers are known."""

from __future__ import annotations


def _entry(cell: str, merge: float = 1.0, **metrics: list[float]) -> dict:
    seeds = list(range(len(next(iter(metrics.values())))))
    e = {"cell": cell, "merge": merge, "seeds": seeds}
    for m in ("acc_audio", "target_loss", "kl_to_base"):
        e[m + "_per_seed"] = metrics.get(m, [0.5] * len(seeds))
    return e


def test_compare_counts_seeds_and_gives_ratio_and_learning():
    from speechllm.study.claims import compare, verdict

    entries = [_entry("gold.lora.plain", kl_to_base=[1.0, 1.0, 0.5], acc_audio=[0.8, 0.9, 1.0]),
               _entry("self.lora.plain", kl_to_base=[0.2, 0.4, 0.6], acc_audio=[0.5, 0.6, 0.7])]
    r = compare(entries, "self.lora.plain", "gold.lora.plain", lambda x, y: x < y)
    assert (r["k"], r["n"]) == (2, 3)  # seed 2: 0.6 is not below 0.5
    assert abs(r["ratio"] - (0.2 + 0.4 + 1.2) / 3) < 1e-9 and abs(r["d_acc"] + 0.3) < 1e-9
    assert verdict(2, 3) == "partly, 2 of 3 seeds" and verdict(3, 3) == "**reproduced**, 3 of 3 seeds"
    assert verdict(0, 3) == "**not reproduced**, 0 of 3 seeds" and verdict(0, 0) == "not run"
    # A cell that ran on fewer seeds is compared on the seeds both have.
    entries.append(_entry("verified.lora.plain", kl_to_base=[0.1]))
    assert compare(entries, "verified.lora.plain", "gold.lora.plain", lambda x, y: x < y)["n"] == 1


def test_claims_table_reads_replay_regularisers_and_merge_curve():
    from speechllm.study.claims import claims_markdown, merge_curve

    entries = [_entry("gold.lora.plain", kl_to_base=[1.0, 2.0], target_loss=[0.2, 0.2]),
               _entry("gold.lora.replay5-sampled", kl_to_base=[0.4, 1.5], target_loss=[0.2, 0.2]),
               _entry("gold.lora.l2sp10", kl_to_base=[0.1, 0.1], target_loss=[0.5, 0.1])]
    for lam, kls in ((0.25, [0.1, 0.1]), (0.5, [0.3, 0.5]), (0.75, [0.6, 0.4])):
        entries.append(_entry("gold.lora.plain", lam, kl_to_base=kls, target_loss=[0.4, 0.4]))
    md = claims_markdown(entries)
    rows = {line.split(" | ")[1]: line for line in md.splitlines()[2:]}
    # Replay: seed 0 halves the KL (0.4 <= 0.5), seed 1 does not (1.5 > 1.0).
    assert "partly, 1 of 2 seeds" in rows["KL replay5-sampled <= 0.5 x plain"]
    assert "KL 0.57x" in rows["KL replay5-sampled <= 0.5 x plain"]
    # L2-SP: lower KL on both seeds, higher target loss only on seed 0.
    assert "partly, 1 of 2 seeds" in rows["gold.lora.l2sp10: KL lower and target loss higher than gold.lora.plain"]
    assert "not run" in rows["KL replay5-pseudo <= 0.5 x plain"] and "not run" in rows["KL self.lora < gold.lora"]
    # Replay rows share gold's targets: their target losses compare; another source's do not.
    assert "Δtarget loss +0.000" in rows["KL replay5-sampled <= 0.5 x plain"]
    assert "(target losses: other texts)" in rows["KL self.lora < gold.lora"]
    # Merge: KL rises with λ on seed 0 only (seed 1: 0.5 at λ 0.5 > 0.4 at λ 0.75).
    curve = merge_curve(entries, "gold.lora.plain")
    assert (curve["k"], curve["n"]) == (1, 2) and abs(curve["ratio"] - (0.3 + 0.25) / 2) < 1e-9
    assert abs(curve["loss_ratio"] - 2.0) < 1e-9
    assert md.startswith("| claim | test, per seed | verdict |")
