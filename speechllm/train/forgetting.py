"""The forgetting controls, one component with its own state: selective token masking (STM),
L2-SP, EWC and KL-to-base on replay rows (``docs/training.md``, "Forgetting controls").

The trainer asks it to mask a batch's labels (:meth:`ForgettingControls.apply_stm`), for the
penalties of a step (:meth:`penalties`) and for the replay KL term (:meth:`replay_kl`); its
:meth:`state_dict` (STM masks and counts, the EWC Fisher) goes into the checkpoint under the same
keys as before it was a component, so older checkpoints resume.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch

from speechllm.errors import ConfigError
from speechllm.train import objectives as obj

log = logging.getLogger(__name__)


class ForgettingControls:
    """STM, L2-SP, EWC and replay KL-to-base for ``model`` per the ``train`` config ``tc``.

    ``llm_params``: the trained parameters inside the LLM (a peft method's weights, or weights
    trained in place by ``model.llm_train``), what L2-SP and EWC regularise; their values at the
    start are the anchors w0. With none, L2-SP, EWC and replay KL-to-base are a ConfigError.
    """

    def __init__(self, model, tc, llm_params: dict[str, torch.nn.Parameter]):
        if not llm_params:
            # Each of these acts only through trained LLM weights: without any it would silently do nothing.
            for name in ("l2sp_alpha", "ewc_lambda", "replay_kl_weight"):
                if getattr(tc, name):
                    raise ConfigError(
                        f"train.{name}: {getattr(tc, name)} regularises trained LLM weights, but none train; enable "
                        "model.lora, model.llm_train or model.prompt_tuning (docs/forgetting.md), or set it to 0")
        self.model = model
        self.tc = tc
        self.llm_params = llm_params
        self.anchors = {n: p.detach().float().clone() for n, p in llm_params.items()}
        self.stm_masks: dict[str, list[bool]] = {}
        self.stm_counts = [0, 0]  # masked, total
        self.fisher: dict[str, torch.Tensor] | None = None
        self._stm_warned = False

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"stm_masks": self.stm_masks, "stm_counts": self.stm_counts, "fisher": self.fisher}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stm_masks = state.get("stm_masks", {})
        self.stm_counts = state.get("stm_counts", [0, 0])
        self.fisher = state.get("fisher")

    @property
    def stm_masked_share(self) -> float | None:
        return (self.stm_counts[0] / self.stm_counts[1]) if self.stm_counts[1] else None

    # ------------------------------------------------------------------ STM

    def apply_stm(self, batch) -> None:
        """Selective token masking of a :class:`~speechllm.train.batch.TrainBatch` (masks computed
        once per example id, then reused)."""
        tau = self.tc.stm_tau
        ids = batch.ids
        exempt = [rep and not self.tc.stm_replay for rep in batch.replay]
        need = [i for i, rid in enumerate(ids) if rid not in self.stm_masks and not exempt[i]]
        if need:
            ppl = self._base_perplexities(batch, replay=self.tc.stm_replay)
            for i in need:
                mask = [p > tau for p in ppl[i]]
                self.stm_masks[ids[i]] = mask
                self.stm_counts[0] += sum(mask)
                self.stm_counts[1] += len(mask)
            share = self.stm_counts[0] / max(1, self.stm_counts[1])
            if share > 0.5 and not self._stm_warned:
                self._stm_warned = True  # once per run; summary.json reports the final share
                log.warning("STM masks %.0f%% of target tokens (tau=%g): the base model cannot do this task and "
                            "little will be learned; raise train.stm_tau or turn STM off", 100 * share, tau)
        masks = [[] if exempt[i] else self.stm_masks[rid] for i, rid in enumerate(ids)]
        batch.speech.labels = obj.apply_token_mask(batch.speech.labels, masks)
        if batch.text is not None:
            batch.text.labels = obj.apply_token_mask(batch.text.labels, [masks[r] for r in batch.text_rows])

    def _base_perplexities(self, batch, *, replay: bool = True) -> list[list[float]]:
        """Per response token: the base LLM's perplexity reading the text view (replay rows: as
        is, when ``replay``; else they get no values)."""
        result: list[list[float]] = [[] for _ in batch.ids]
        if batch.text is not None:
            for r, p in zip(batch.text_rows, obj.token_perplexities(self.model, batch.text)):
                result[r] = p
        replay_rows = [r for r, rep in enumerate(batch.replay) if rep] if replay else []
        if replay_rows:
            from speechllm.models.speech_llm import SpeechBatch

            sb = batch.speech
            sub = SpeechBatch(input_ids=sb.input_ids[replay_rows], attention_mask=sb.attention_mask[replay_rows],
                              position_ids=sb.position_ids[replay_rows], labels=sb.labels[replay_rows],
                              audio_mask=sb.audio_mask[replay_rows])
            for r, p in zip(replay_rows, obj.token_perplexities(self.model, sub)):
                result[r] = p
        return result

    # ------------------------------------------------------------------ penalties

    def replay_kl(self, batch, student) -> torch.Tensor | None:
        """Summed KL(base || tuned) at T=1 over the replay rows' response tokens, or None when the
        batch has no replay row, the weight is 0 or no LLM weight trains."""
        if not (self.tc.replay_kl_weight and any(batch.replay) and self.llm_params):
            return None
        rows = [r for r, rep in enumerate(batch.replay) if rep]
        with torch.no_grad():
            base = self.model.response_forward(batch.speech, disable_lora=True)
        return obj.kl_sum(obj.rows_logits(student, rows), obj.rows_logits(base, rows), 1.0)

    def penalties(self) -> dict[str, torch.Tensor]:
        """``l2sp`` (α/2·‖w − w0‖²) and ``ewc`` (λ/2·Σ F (w − w0)²), already weighted."""
        out: dict[str, torch.Tensor] = {}
        params = self.llm_params
        if not params:
            return out
        if self.tc.l2sp_alpha:
            out["l2sp"] = self.tc.l2sp_alpha * obj.l2sp_penalty(params, self.anchors)
        if self.tc.ewc_lambda:
            if self.fisher is None:
                raise RuntimeError("EWC Fisher not estimated; run() estimates it before the first step")
            out["ewc"] = self.tc.ewc_lambda * obj.ewc_penalty(params, self.anchors, self.fisher)
        return out

    def needs_fisher(self) -> bool:
        return bool(self.tc.ewc_lambda and self.llm_params and self.fisher is None)

    def estimate_fisher(self, batches: Iterable[Any]) -> dict[str, torch.Tensor]:
        """Diagonal Fisher of the trained LLM weights from squared per-batch gradients of the CE
        loss (replay rows as they are, else the training rows' text view), normalised to mean 1."""
        params = self.llm_params
        fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        was_training = self.model.training
        self.model.eval()
        for batch in batches:
            target = batch.speech if batch.text is None or any(batch.replay) else batch.text
            for p in params.values():
                p.grad = None
            out = self.model.response_forward(target)
            loss = obj.ce_sum(out) / max(1, out.targets.numel())
            loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().float() ** 2
        for p in params.values():
            p.grad = None
        self.model.train(was_training)
        return obj.normalise_fisher(fisher)
