"""Gecko's contrastive loss, and its Matryoshka average over nested dimensions.

For query i the softmax runs over
  * every in-batch positive p_j (p_i is the target),
  * every other query q_j, j != i (same-tower negatives: they stop queries from collapsing),
  * its own hard negative n_i (or, with `all_negatives`, every in-batch hard negative n_j),
all scored by cosine similarity divided by the temperature.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def gecko_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    n: torch.Tensor | None = None,
    temperature: float = 0.05,
    all_negatives: bool = False,
) -> torch.Tensor:
    """Mean over queries of -log softmax(target). q, p, n: [B, d], already L2-normalised."""
    batch = q.size(0)
    scores = [q @ p.T]
    same_tower = q @ q.T
    # A query is not its own negative; -inf gives it zero weight in the softmax.
    eye = torch.eye(batch, dtype=torch.bool, device=q.device)
    scores.append(same_tower.masked_fill(eye, float("-inf")))
    if n is not None:
        scores.append(q @ n.T if all_negatives else (q * n).sum(-1, keepdim=True))
    logits = torch.cat(scores, dim=1) / temperature
    labels = torch.arange(batch, device=q.device)  # p_i sits in column i of the first block
    return F.cross_entropy(logits, labels)


def truncate(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The first `dim` coordinates, re-normalised (a Matryoshka sub-embedding)."""
    return F.normalize(x[..., :dim], dim=-1)


def matryoshka_gecko_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    n: torch.Tensor | None,
    dims: Sequence[int],
    temperature: float = 0.05,
    all_negatives: bool = False,
) -> torch.Tensor:
    """Gecko's loss at each nested dim, averaged with equal weights."""
    losses = [
        gecko_loss(
            truncate(q, d), truncate(p, d), None if n is None else truncate(n, d),
            temperature, all_negatives,
        )
        for d in dims
    ]
    return torch.stack(losses).mean()
