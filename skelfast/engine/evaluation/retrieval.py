"""Action retrieval: each test clip queries the training set (the gallery) by cosine similarity.

* top-1: the nearest gallery item has the query's label (the same number as 1-NN accuracy);
* mAP: for each query, rank the whole gallery by similarity (ties by gallery index), then
  AP = mean over the gallery items of the query's class of (precision at that item's rank);
  mAP = mean AP over queries whose class occurs in the gallery (the others have no relevant item
  and are left out; their count is reported).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from skelfast.engine.evaluation.common import ProtocolResult
from skelfast.engine.evaluation.features import extract_features
from skelfast.engine.evaluation.knn import check_inputs, topk_cosine


def average_precisions(
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    query_chunk: int = 256,
) -> torch.Tensor:
    """AP (Q,) float64 of each query (NaN where the gallery has no item of its class).
    gallery (N, F), gallery_labels (N,), queries (Q, F), query_labels (Q,)."""
    check_inputs(gallery, gallery_labels, queries, 1)
    if query_labels.shape != (queries.shape[0],):
        raise ValueError(f"query_labels must be ({queries.shape[0]},), got {tuple(query_labels.shape)}")
    gallery = F.normalize(gallery.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    gallery_labels = gallery_labels.to(gallery.device).long()
    query_labels = query_labels.to(gallery.device).long()
    ranks = torch.arange(1, gallery.shape[0] + 1, device=gallery.device, dtype=torch.float64)
    out = []
    for q0 in range(0, queries.shape[0], query_chunk):
        sim = queries[q0 : q0 + query_chunk] @ gallery.T  # (Qc, N)
        order = torch.sort(sim, dim=1, descending=True, stable=True).indices
        relevant = (gallery_labels[order] == query_labels[q0 : q0 + query_chunk, None]).double()
        hits = relevant.cumsum(dim=1)
        n_relevant = relevant.sum(dim=1)
        ap = (relevant * hits / ranks).sum(dim=1) / n_relevant
        out.append(torch.where(n_relevant > 0, ap, torch.full_like(ap, float("nan"))))
    return torch.cat(out).cpu()


def retrieval_metrics(
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    query_chunk: int = 256,
) -> dict[str, float | int]:
    """``{"top1": %, "mAP": %, "queries": Q, "queries_without_match": n}`` of test queries against
    the gallery (shapes as ``average_precisions``)."""
    ap = average_precisions(gallery, gallery_labels, queries, query_labels, query_chunk)
    _, nearest = topk_cosine(gallery, queries, 1)
    hit = gallery_labels.to(nearest.device).long()[nearest[:, 0]].cpu() == query_labels.cpu().long()
    matched = ~torch.isnan(ap)
    return {
        "top1": 100.0 * hit.double().mean().item(),
        "mAP": 100.0 * ap[matched].mean().item() if matched.any() else float("nan"),
        "queries": int(queries.shape[0]),
        "queries_without_match": int((~matched).sum()),
    }


@dataclass
class RetrievalSettings:
    """Retrieval protocol settings (features of both sets with the test transform)."""

    feature_batch_size: int = 256
    query_chunk: int = 256
    num_workers: int = 0
    official_reports: str = "last"


def retrieval_eval(
    encoder: torch.nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    settings: RetrievalSettings | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> ProtocolResult:
    """Test clips as queries against the training clips; accuracy = top-1, ``metrics`` adds mAP."""
    settings = settings or RetrievalSettings()
    extract = dict(
        batch_size=settings.feature_batch_size,
        device=device,
        num_workers=settings.num_workers,
        progress=progress,
    )
    gallery, gallery_labels = extract_features(encoder, train_set, desc="gallery features", **extract)
    queries, query_labels = extract_features(encoder, test_set, desc="query features", **extract)
    metrics = retrieval_metrics(
        gallery.to(device), gallery_labels, queries.to(device), query_labels, settings.query_chunk
    )
    top1 = float(metrics["top1"])
    row = {"epoch": None, "accuracy": top1, "mAP": metrics["mAP"]}
    return ProtocolResult("retrieval", top1, top1, None, settings.official_reports, [row], dict(metrics))
