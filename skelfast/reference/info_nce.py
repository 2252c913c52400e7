"""Pure-PyTorch InfoNCE over memory queues in the official form: the full (N, G + K) logits, then
``F.cross_entropy`` (MoCo, ISC, CRRL), the sum of positive probabilities inside the log (HiCo), and
HiCLR's consistency and nearest-neighbour-mining terms. Each builds O(N * K) memory per level;
``skelfast.ops.info_nce`` computes the same numbers without it.

Conventions shared with the op: queues are (K, D) rows (MoCo code keeps (D, K): pass ``queue.T``);
positives are (N, D) or (N, G, D); logits are ``[q . positives, q . queue] / temperature``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def queue_logits(
    q: torch.Tensor, positives: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(N, G + K) logits ``[q . p_g ; q . queue] / temperature``; positives (N, D) or (N, G, D)."""
    pos = positives if positives.dim() == 3 else positives.unsqueeze(1)
    l_pos = torch.einsum("nd,ngd->ng", q, pos)
    l_neg = torch.einsum("nd,kd->nk", q, queue.detach())
    return torch.cat([l_pos, l_neg], dim=1) / temperature


def moco_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo InfoNCE: cross-entropy of ``[q.k, q.queue] / tau`` with label 0, mean over the batch."""
    logits = queue_logits(q, k, queue, temperature)
    return F.cross_entropy(logits.float(), torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def multi_positive_info_nce(
    q: torch.Tensor, positives: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    """HiCo's MultiPositiveInfoNCE: ``-mean log(sum_{g<G} softmax(logits)_g)`` (log-sum-exp form)."""
    logits = queue_logits(q, positives, queue, temperature).float()
    g = positives.shape[1] if positives.dim() == 3 else 1
    return (torch.logsumexp(logits, 1) - torch.logsumexp(logits[:, :g], 1)).mean()


def mined_info_nce(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float, mined: torch.Tensor
) -> torch.Tensor:
    """AimCLR/HiCLR nearest-neighbour mining: ``-mean_n mean_{j in P_n} log_softmax(logits_n)_j``
    with P_n = {key} union the queue indices ``mined[n]`` (N, M) (duplicates count once)."""
    logits = queue_logits(q, k, queue, temperature).float()
    mask = torch.zeros_like(logits)
    mask[:, 0] = 1
    mask[:, 1:].scatter_(1, mined, 1.0)
    return (-(F.log_softmax(logits, 1) * mask).sum(1) / mask.sum(1)).mean()


def nearest_queue_entry(q: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    """(N,) index of the queue row with the largest raw dot product with each query."""
    return torch.einsum("nd,kd->nk", q.float(), queue.float()).argmax(1)


def info_nce(
    queries: Sequence[torch.Tensor],
    positives: Sequence[torch.Tensor],
    queues: Sequence[torch.Tensor],
    temperature: float,
    mined: Sequence[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """(L,) per-level losses: MoCo cross-entropy for one positive, HiCo's sum-of-probabilities form
    for several, the mined mean-log-probability form where ``mined[l]`` is given."""
    losses = []
    for lvl, (q, pos, queue) in enumerate(zip(queries, positives, queues, strict=True)):
        mined_l = None if mined is None else mined[lvl]
        if mined_l is not None:
            losses.append(mined_info_nce(q, pos, queue, temperature, mined_l))
        elif pos.dim() == 3 and pos.shape[1] > 1:
            losses.append(multi_positive_info_nce(q, pos, queue, temperature))
        else:
            losses.append(moco_info_nce(q, pos.reshape(q.shape), queue, temperature))
    return torch.stack(losses)


def hiclr_loss(
    q: torch.Tensor,
    q1: torch.Tensor,
    q2: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    temperature: float = 0.07,
    mining: bool = False,
    consistency_weight: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiCLR (spec hico_hiclr.md §2.5): ``L = L_nce + w (L_1 + L_2)`` with
    ``L_1 = -mean sum_j sg(p_q)_j log p_q1_j`` and ``L_2 = -mean sum_j sg(p_q1)_j log p_q2_j`` over
    the [key, queue] entries; L_nce is InfoNCE on the basic branch q, or in phase 2 (``mining``) the
    mean log-probability over {key} union the top-1 queue entries of q, q1 and q2.
    Returns (loss, L_nce, L_1, L_2)."""
    logits = [queue_logits(b, k, queue, temperature).float() for b in (q, q1, q2)]
    log_p = [F.log_softmax(lg, 1) for lg in logits]
    if mining:
        mined = torch.stack([nearest_queue_entry(b, queue) for b in (q, q1, q2)], 1)
        nce = mined_info_nce(q, k, queue, temperature, mined)
    else:
        nce = F.cross_entropy(logits[0], torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
    l1 = -(log_p[0].detach().exp() * log_p[1]).sum(1).mean()
    l2 = -(log_p[1].detach().exp() * log_p[2]).sum(1).mean()
    return nce + consistency_weight * (l1 + l2), nce, l1, l2
