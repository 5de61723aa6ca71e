"""Training objectives and forgetting controls, as functions of the model and a batch.

All token losses are *sums* over target tokens; the trainer divides by the global number of
target tokens of the optimiser step (all ranks, all accumulation steps), so a token weighs the
same whichever micro-batch or rank it lands on.

- ``ce``: next-token cross-entropy on response tokens.
- ``kl``: KL(teacher || student) at temperature T over response positions, teacher = the same
  frozen LLM reading the seed description where the audio stands (no gradient); scaled by T².
- ``diva``: squared L2 between the final hidden states at the last prompt position (the one that
  predicts the first response token) of text-reading teacher and audio-hearing student, plus the
  squared L2 between the last N adapter vectors and the N transcript token embeddings.
- STM (selective token masking): response tokens whose base-model perplexity exceeds tau lose
  their label.
- L2-SP and EWC penalties on trained LLM weights; KL-to-base on replay rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from speechllm.models.chat_layout import IGNORE_INDEX
from speechllm.models.speech_llm import ResponseForward
from speechllm.train.fused import cross_entropy_sum

OBJECTIVES = ("ce", "kl", "diva")


# The one forward lives on the model (``SpeechLLM.response_forward``: the LLM body once, the LM head
# only at response positions, optional shared-prefix KV and LoRA off); these objectives read it.
def ce_sum(out: ResponseForward) -> torch.Tensor:
    """Summed cross-entropy over response tokens (fp32 log-sum-exp, in row chunks:
    :func:`speechllm.train.fused.cross_entropy_sum`)."""
    return cross_entropy_sum(out.logits, out.targets)


def kl_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Summed KL(teacher || student) over positions at temperature T, times T² (Hinton's scaling,
    so gradients keep their size across temperatures)."""
    if student_logits.numel() == 0:
        return student_logits.sum() * 0.0
    t = float(temperature)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    return kl.sum() * t * t


def rows_logits(out: ResponseForward, rows: list[int]) -> torch.Tensor:
    """The response logits of the given batch rows, in row order."""
    counts = out.select.sum(1).tolist()
    starts = [sum(counts[:i]) for i in range(len(counts))]
    pieces = [out.logits[starts[r]:starts[r] + counts[r]] for r in rows]
    return torch.cat(pieces) if pieces else out.logits[:0]


def last_prompt_hidden(out: ResponseForward, labels: torch.Tensor) -> torch.Tensor:
    """Final hidden state at the position predicting each row's first response token: ``(B, D)``."""
    first = (labels != IGNORE_INDEX).float().argmax(dim=1)  # index of the first labelled token
    pos = (first - 1).clamp(min=0)
    return out.hidden[torch.arange(out.hidden.shape[0], device=pos.device), pos]


@torch.no_grad()
def teacher_forward(model, text_batch, prefix=None) -> ResponseForward:
    """The frozen LLM reading the text view (LoRA off: the base model)."""
    return model.response_forward(text_batch, disable_lora=True, prefix=prefix)


def diva_terms(model, batch, student: ResponseForward, teacher: ResponseForward, num_align: int) -> tuple[torch.Tensor, int]:
    """(summed DiVA loss over the text-mirrored rows, number of rows it covers)."""
    rows = batch.text_rows
    s = last_prompt_hidden(student, batch.speech.labels)[rows].float()
    t = last_prompt_hidden(teacher, batch.text.labels).float()
    loss = ((s - t) ** 2).sum(-1).sum()
    if num_align > 0 and batch.speech.encoded is not None:
        vectors = model.audio_vectors(batch.speech.encoded)
        emb = model.llm.get_input_embeddings()
        start = 0
        audio_row = 0
        for r, is_replay in enumerate(batch.replay):
            if is_replay:
                continue
            n_vec = int(batch.speech.audio_mask[r].sum())
            tids = batch.transcript_ids[audio_row]
            n = min(num_align, n_vec, len(tids))
            if n:
                v = vectors[start + n_vec - n:start + n_vec].float()
                target = emb(torch.tensor(tids[:n], device=v.device)).float()
                loss = loss + ((v - target) ** 2).sum(-1).sum()
            start += n_vec
            audio_row += 1
    return loss, len(rows)


@torch.no_grad()
def token_perplexities(model, batch) -> list[list[float]]:
    """Base-model perplexity (exp NLL) of every response token of each row, in order."""
    out = model.response_forward(batch, disable_lora=True)
    nll = F.cross_entropy(out.logits.float(), out.targets, reduction="none")
    counts = out.select.sum(1).tolist()
    ppl = nll.exp().tolist()
    result, k = [], 0
    for c in counts:
        result.append(ppl[k:k + c])
        k += c
    return result


def apply_token_mask(labels: torch.Tensor, masks: list[list[bool]]) -> torch.Tensor:
    """Set to IGNORE_INDEX the response tokens flagged True (row-wise, in order)."""
    labels = labels.clone()
    for r, mask in enumerate(masks):
        positions = (labels[r] != IGNORE_INDEX).nonzero().flatten()
        # Position 0 is never predicted; the loss reads labels[:, 1:], masks follow that order.
        positions = positions[positions > 0]
        for p, m in zip(positions.tolist(), mask):
            if m:
                labels[r, p] = IGNORE_INDEX
    return labels


def l2sp_penalty(params: dict[str, torch.Tensor], anchors: dict[str, torch.Tensor]) -> torch.Tensor:
    """0.5 * sum ||w - w0||² (the trainer multiplies by alpha)."""
    total = None
    for name, p in params.items():
        term = ((p.float() - anchors[name]) ** 2).sum()
        total = term if total is None else total + term
    return 0.5 * total if total is not None else torch.zeros(())


def ewc_penalty(params: dict[str, torch.Tensor], anchors: dict[str, torch.Tensor],
                fisher: dict[str, torch.Tensor]) -> torch.Tensor:
    """0.5 * sum F (w - w0)² with F normalised to mean 1 (the trainer multiplies by lambda)."""
    total = None
    for name, p in params.items():
        term = (fisher[name] * (p.float() - anchors[name]) ** 2).sum()
        total = term if total is None else total + term
    return 0.5 * total if total is not None else torch.zeros(())


def normalise_fisher(fisher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Divide by the mean over all entries: raw diagonal Fisher values (~1e-9..1e-5) would make
    any usable lambda a no-op; after this lambda has the scale of L2-SP's alpha."""
    total = sum(float(f.sum()) for f in fisher.values())
    count = sum(f.numel() for f in fisher.values())
    mean = total / max(count, 1)
    if mean <= 0:
        return {k: torch.ones_like(v) for k, v in fisher.items()}
    return {k: v / mean for k, v in fisher.items()}
