"""k-nearest-neighbour classification on frozen features, torch only.

* ``k = 1``, cosine: the official ISC/HiCo/CRRL evaluation (sklearn ``KNeighborsClassifier(1,
  metric="cosine")`` on L2-normalised features). Ties go to the lowest gallery index.
* ``k > 1``: sklearn's plain majority vote (``weighting="uniform"``), or InstDisc's weighted vote
  (``"exp"``; Wu et al. 2018, used by most SSL codebases): each of the k most similar gallery
  items votes for its class with weight ``exp(cos / temperature)``, temperature 0.07; the
  prediction is the class with the largest summed weight.

Memory stays bounded: queries are processed ``query_chunk`` at a time and the gallery
``gallery_chunk`` columns at a time, keeping a running top-k, so the largest temporary is
``query_chunk x gallery_chunk`` similarities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from skelfast.engine.evaluation.common import ProtocolResult
from skelfast.engine.evaluation.features import extract_features


def check_inputs(gallery: torch.Tensor, gallery_labels: torch.Tensor, queries: torch.Tensor, k: int) -> None:
    if gallery.ndim != 2 or queries.ndim != 2 or gallery.shape[1] != queries.shape[1]:
        raise ValueError(
            f"expected gallery (N, F) and queries (Q, F) with the same F, got {tuple(gallery.shape)} "
            f"and {tuple(queries.shape)}"
        )
    if gallery_labels.shape != (gallery.shape[0],):
        raise ValueError(f"gallery_labels must be ({gallery.shape[0]},), got {tuple(gallery_labels.shape)}")
    if not 1 <= k <= gallery.shape[0]:
        raise ValueError(f"k must be in [1, {gallery.shape[0]}] (the gallery size), got {k}")
    if not (torch.isfinite(gallery).all() and torch.isfinite(queries).all()):
        raise ValueError("features contain NaN or inf")


def topk_cosine(
    gallery: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    query_chunk: int = 1024,
    gallery_chunk: int = 16384,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most cosine-similar gallery rows of each query: gallery (N, F), queries (Q, F) ->
    (similarities (Q, k) descending, indices (Q, k) int64). For k = 1 ties go to the lowest index."""
    gallery = F.normalize(gallery.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    n = gallery.shape[0]
    out_sim, out_idx = [], []
    for q0 in range(0, queries.shape[0], query_chunk):
        q = queries[q0 : q0 + query_chunk]
        best_sim = torch.full((q.shape[0], k), -float("inf"), device=q.device)
        best_idx = torch.zeros((q.shape[0], k), dtype=torch.int64, device=q.device)
        for g0 in range(0, n, gallery_chunk):
            sim = q @ gallery[g0 : g0 + gallery_chunk].T
            if k == 1:  # argmax returns the first maximum; strict > keeps earlier chunks on ties
                s, i = sim.max(dim=1, keepdim=True)
                better = s > best_sim
                best_sim = torch.where(better, s, best_sim)
                best_idx = torch.where(better, i + g0, best_idx)
            else:
                kk = min(k, sim.shape[1])
                s, i = sim.topk(kk, dim=1)
                merged_sim = torch.cat([best_sim, s], dim=1)
                merged_idx = torch.cat([best_idx, i + g0], dim=1)
                best_sim, pos = merged_sim.topk(k, dim=1)
                best_idx = merged_idx.gather(1, pos)
        out_sim.append(best_sim)
        out_idx.append(best_idx)
    return torch.cat(out_sim), torch.cat(out_idx)


def knn_predict(
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    queries: torch.Tensor,
    k: int = 1,
    weighting: str = "uniform",
    temperature: float = 0.07,
    num_classes: int | None = None,
    query_chunk: int = 1024,
    gallery_chunk: int = 16384,
) -> torch.Tensor:
    """Predicted labels (Q,) int64 of queries (Q, F) from a labelled gallery (N, F), (N,): the k
    most cosine-similar gallery items vote, each with weight 1 (``weighting="uniform"``; ties go to
    the lowest class) or InstDisc's ``exp(cos / temperature)`` (``"exp"``). k = 1 is the nearest."""
    check_inputs(gallery, gallery_labels, queries, k)
    if weighting not in ("uniform", "exp"):
        raise ValueError(f"weighting must be 'uniform' or 'exp', got {weighting!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    gallery_labels = gallery_labels.to(gallery.device).long()
    sim, idx = topk_cosine(gallery, queries, k, query_chunk, gallery_chunk)
    neighbour_labels = gallery_labels[idx]  # (Q, k)
    if k == 1:
        return neighbour_labels[:, 0]
    c = num_classes if num_classes is not None else int(gallery_labels.max()) + 1
    votes = torch.zeros(queries.shape[0], c, device=sim.device)
    weights = torch.exp(sim / temperature) if weighting == "exp" else torch.ones_like(sim)
    votes.scatter_add_(1, neighbour_labels, weights)
    return votes.argmax(dim=1)


def knn_accuracy(
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    k: int = 1,
    weighting: str = "uniform",
    temperature: float = 0.07,
    **chunks: int,
) -> float:
    """Top-1 accuracy (%) of ``knn_predict`` against ``query_labels`` (Q,)."""
    if query_labels.shape != (queries.shape[0],):
        raise ValueError(f"query_labels must be ({queries.shape[0]},), got {tuple(query_labels.shape)}")
    num_classes = int(max(gallery_labels.max(), query_labels.max())) + 1
    pred = knn_predict(gallery, gallery_labels, queries, k, weighting, temperature, num_classes, **chunks)
    return 100.0 * (pred.cpu() == query_labels.cpu().long()).double().mean().item()


@dataclass
class KnnSettings:
    """kNN protocol settings. The official number is ``k`` neighbours by ``metric`` (1 and cosine in
    every official code; for k > 1 a plain majority vote, as sklearn's default); ``weighted_ks``
    adds InstDisc's ``exp(cos / temperature)``-weighted vote at those k. Features of both sets use
    the test transform."""

    k: int = 1
    metric: str = "cosine"
    weighted_ks: tuple[int, ...] = (20,)
    temperature: float = 0.07
    feature_batch_size: int = 256
    query_chunk: int = 1024
    gallery_chunk: int = 16384
    num_workers: int = 0
    official_reports: str = "last"

    def __post_init__(self) -> None:
        self.weighted_ks = tuple(int(k) for k in self.weighted_ks)
        if self.metric != "cosine":
            raise ValueError(f"metric: only 'cosine' (what every official kNN uses), got {self.metric!r}")
        if self.k < 1 or any(k < 1 for k in self.weighted_ks):
            raise ValueError(f"k and weighted_ks must be >= 1, got {self.k}, {self.weighted_ks}")


def knn_eval(
    encoder: torch.nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    settings: KnnSettings | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> ProtocolResult:
    """Test clips classified by their nearest training clips (frozen encoder, eval mode); the
    result's accuracy is the official ``k``, ``metrics`` holds every k (``"k1"``, ``"k20_weighted"``)."""
    settings = settings or KnnSettings()
    extract = dict(
        batch_size=settings.feature_batch_size,
        device=device,
        num_workers=settings.num_workers,
        progress=progress,
    )
    gallery, gallery_labels = extract_features(encoder, train_set, desc="train features", **extract)
    queries, query_labels = extract_features(encoder, test_set, desc="test features", **extract)
    gallery, queries = gallery.to(device), queries.to(device)
    chunks = {"query_chunk": settings.query_chunk, "gallery_chunk": settings.gallery_chunk}
    official = f"k{settings.k}"
    metrics = {official: knn_accuracy(gallery, gallery_labels, queries, query_labels, settings.k, **chunks)}
    for k in settings.weighted_ks:
        metrics[f"k{k}_weighted"] = knn_accuracy(
            gallery, gallery_labels, queries, query_labels, k, "exp", settings.temperature, **chunks
        )
    acc = metrics[official]
    row = {"epoch": None, "accuracy": acc, **metrics}
    return ProtocolResult("knn", acc, acc, None, settings.official_reports, [row], metrics)
