"""The downstream evaluation protocols on a frozen or fine-tuned ``FeatureEncoder``.

* ``linear``: a linear classifier on the frozen encoder (``linear.py``);
* ``knn``: 1-NN cosine and InstDisc's weighted 20-NN (``knn.py``);
* ``finetune``: the whole network trained with labels (``finetune.py``);
* ``semi``: fine-tuning (or linear) on class-balanced 1 % / 10 % label subsets (``semi.py``);
* ``retrieval``: test clips querying the training set, top-1 and mAP (``retrieval.py``).

``evaluate(protocol, encoder, train_set, test_set, settings, out_dir)`` runs one of them with the
settings of a config's ``[eval.<protocol>]`` table and writes ``out_dir/<protocol>.json``
(``report.py``). Features come from ``features.py``; shared training pieces from ``common.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from skelfast.engine.evaluation.common import ProtocolResult, settings_from_dict, settings_to_dict
from skelfast.engine.evaluation.features import dataset_labels, extract_features, num_classes_of
from skelfast.engine.evaluation.finetune import FinetuneSettings, finetune
from skelfast.engine.evaluation.knn import KnnSettings, knn_accuracy, knn_eval, knn_predict
from skelfast.engine.evaluation.linear import LinearSettings, linear_eval
from skelfast.engine.evaluation.report import print_table, report_record, write_report
from skelfast.engine.evaluation.retrieval import RetrievalSettings, retrieval_eval, retrieval_metrics
from skelfast.engine.evaluation.semi import (
    SemiSettings,
    balanced_subset,
    semi_supervised,
    split_semi_settings,
)

PROTOCOLS = ("linear", "knn", "finetune", "semi", "retrieval")
_SETTINGS = {
    "linear": LinearSettings,
    "knn": KnnSettings,
    "finetune": FinetuneSettings,
    "retrieval": RetrievalSettings,
}


def _dataset_info(train_set: Dataset, test_set: Dataset) -> dict[str, Any]:
    info: dict[str, Any] = {
        "train_samples": len(train_set),
        "test_samples": len(test_set),
        "num_classes": num_classes_of(train_set, test_set),
    }
    for name, ds in (("train", train_set), ("test", test_set)):
        path = getattr(ds, "data_path", None)
        if path is not None:
            info[f"{name}_path"] = str(path)
    return info


def evaluate(
    protocol: str,
    feature_encoder: torch.nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    settings: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    dataset_info: dict[str, Any] | None = None,
    encoder_info: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run ``protocol`` (one of ``PROTOCOLS``) with ``settings`` (a config's ``[eval.<protocol>]``
    table; documented defaults for what is missing) and write each report to ``out_dir`` (when
    given). Returns ``{report name: record}``: one record, or one per label fraction for ``semi``
    (``semi_1``, ``semi_10``)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; protocols are {list(PROTOCOLS)}")
    if not hasattr(feature_encoder, "feature_dim") or not hasattr(feature_encoder, "transform"):
        raise TypeError("feature_encoder must be a skelfast FeatureEncoder (feature_dim, transform)")
    info = {**_dataset_info(train_set, test_set), **(dataset_info or {})}
    results: list[tuple[ProtocolResult, dict[str, Any]]] = []
    if protocol == "semi":
        semi, train_settings = split_semi_settings(settings)
        used = {**settings_to_dict(semi), **settings_to_dict(train_settings)}
        for percent in semi.percents:
            result = semi_supervised(
                feature_encoder, train_set, test_set, percent, semi, train_settings, out_dir, device, progress
            )
            results.append((result, used))
    else:
        parsed = settings_from_dict(_SETTINGS[protocol], settings, protocol)
        run = {"linear": linear_eval, "knn": knn_eval, "finetune": finetune, "retrieval": retrieval_eval}[
            protocol
        ]
        results.append(
            (run(feature_encoder, train_set, test_set, parsed, device, progress), settings_to_dict(parsed))
        )
    records = {}
    for result, used in results:
        record = report_record(result, used, info, encoder_info)
        if out_dir is not None:
            write_report(out_dir, record)
        records[result.protocol] = record
    return records


__all__ = [
    "PROTOCOLS",
    "FinetuneSettings",
    "KnnSettings",
    "LinearSettings",
    "ProtocolResult",
    "RetrievalSettings",
    "SemiSettings",
    "balanced_subset",
    "dataset_labels",
    "evaluate",
    "extract_features",
    "finetune",
    "knn_accuracy",
    "knn_eval",
    "knn_predict",
    "linear_eval",
    "print_table",
    "retrieval_eval",
    "retrieval_metrics",
    "semi_supervised",
]
