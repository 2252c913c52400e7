"""A 2-D picture of a feature space: PCA (``torch.pca_lowrank``) of features, coloured by label.

``embedding_plot(features, labels, path)`` is the plot; ``pretrained_features(run, data)`` gets the
features of a run's pretrained encoder on a split (checkpoint_last.pt -> ``build_method`` ->
``feature_encoder()`` with its deterministic test transform, as the evaluation protocols run it),
for ``skelfast plot --embedding``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

OVERSAMPLE = 10  # extra random directions of the low-rank PCA (Halko et al.'s usual p)


def pca_2d(features: torch.Tensor) -> torch.Tensor:
    """Project (N, F) features onto their first two principal components -> (N, 2) float32.

    ``torch.pca_lowrank`` (centred, ``OVERSAMPLE`` extra columns, 6 power iterations) under a fixed seed in a forked RNG, so the picture is reproducible
    and the caller's random state is untouched; each component's sign is fixed so its largest
    loading is positive (as sklearn's ``svd_flip``). F = 1 gives a zero second coordinate.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {tuple(features.shape)}")
    n, f = features.shape
    if n < 2 or f < 1:
        raise ValueError(f"a PCA embedding needs at least 2 samples and 1 feature, got (N, F) = ({n}, {f})")
    feats = features.detach().to("cpu", torch.float64)
    if not torch.isfinite(feats).all():
        raise ValueError("features contain NaN or infinite values")
    q = min(2, n, f)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # oversampled: a randomized basis of just 2 columns misses PC 2 when the spectrum is flat
        _, _, v = torch.pca_lowrank(feats, q=min(q + OVERSAMPLE, n, f), center=True, niter=6)
    v = v[:, :q]
    biggest = v.abs().argmax(dim=0)
    v = v * torch.sign(v[biggest, torch.arange(q)])
    coords = (feats - feats.mean(dim=0)) @ v
    if q < 2:
        coords = torch.cat([coords, torch.zeros(n, 2 - q, dtype=coords.dtype)], dim=1)
    return coords.float()


def embedding_plot(
    features: torch.Tensor, labels: torch.Tensor, path: str | Path, title: str = "PCA of features"
) -> torch.Tensor:
    """Scatter the 2-D PCA (``pca_2d``) of features (N, F), one colour per label (N,), into a PNG.

    Returns the plotted coordinates (N, 2).
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = torch.as_tensor(labels).reshape(-1)
    if len(labels) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    coords = pca_2d(features).numpy()
    classes = np.unique(labels.numpy())
    fig = Figure(figsize=(5.0, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "turbo"]
    for i, c in enumerate(classes):
        pick = labels.numpy() == c
        color = cmap(i % cmap.N) if cmap.N < 256 else cmap(i / max(len(classes) - 1, 1))
        ax.scatter(coords[pick, 0], coords[pick, 1], s=8, color=color, label=str(c))
    if len(classes) <= 20:
        ax.legend(title="label", fontsize=6, title_fontsize=7, markerscale=1.5, loc="best")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"{title} (N={len(coords)}, {len(classes)} classes)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return torch.from_numpy(coords)


def load_pretrained(checkpoint: str | Path) -> tuple[torch.nn.Module, dict]:
    """The pretrained method of a checkpoint (``build_method`` + ``load_state_dict``), in eval mode,
    and the run's config (the checkpoint's ``config`` entry)."""
    from skelfast.methods import build_method

    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "method" not in ckpt:
        raise ValueError(f"{checkpoint}: not a skelfast checkpoint (needs 'config' and 'method' entries)")
    config = ckpt["config"]
    method = build_method(config["method"], config.get("model"))
    method.load_state_dict(ckpt["method"])
    return method.eval(), config


def encoder_features(
    encoder: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    batch_size: int = 64,
    limit: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, F) and labels (N,) of a ``FeatureEncoder`` over the first ``limit`` samples of a
    dataset (a picture needs a few hundred, not a whole test set), with its deterministic test
    transform, as the evaluation protocols compute them (``skelfast.engine.evaluation.features``)."""
    from skelfast.engine.evaluation.features import extract_features

    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    return extract_features(
        encoder, dataset, batch_size=batch_size, device=device, progress=False, desc="embedding"
    )
