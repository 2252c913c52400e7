"""Per-method augmentation recipes: samplers that draw a batch's parameters from a
``torch.Generator``, for ``skelfast.ops.augment`` to apply (and replay)."""

from skelfast.augment.params import STREAMS, AugmentParams
from skelfast.augment.recipes import (
    CRRL,
    ISC,
    RECIPES,
    CropResizeSpatial,
    HiCLR,
    HiCo,
    NoAugmentation,
    RandomAffine,
    RecipeAugment,
)

__all__ = [
    "CRRL",
    "ISC",
    "RECIPES",
    "STREAMS",
    "AugmentParams",
    "CropResizeSpatial",
    "HiCLR",
    "HiCo",
    "NoAugmentation",
    "RandomAffine",
    "RecipeAugment",
]
