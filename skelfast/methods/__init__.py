"""The four pretraining methods (HiCo, HiCLR, ISC, CRRL) on the MoCo core, and their registry."""

from __future__ import annotations

import importlib
from typing import Any

from skelfast.methods.base import FeatureEncoder, MethodConfig, PretrainMethod, StepOutput
from skelfast.methods.moco import momentum_update

# name -> "module:class"; imported on first use so one method's heavy imports never slow another's
METHODS = {
    "hico": "skelfast.methods.hico:HiCo",
    "hiclr": "skelfast.methods.hiclr:HiCLR",
    "isc": "skelfast.methods.isc:ISC",
    "crrl": "skelfast.methods.crrl:CRRL",
}


def method_class(name: str) -> type[PretrainMethod]:
    """The class of a registered method (``hico``, ``hiclr``, ``isc``, ``crrl``)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; methods are {sorted(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_method(name: str, options: dict[str, Any] | None = None) -> PretrainMethod:
    """A method from its name and the options of a config file's ``[method]`` table (official
    values for everything not given)."""
    cls = method_class(name)
    return cls(cls.config_class.from_dict(options))


__all__ = [
    "METHODS",
    "FeatureEncoder",
    "MethodConfig",
    "PretrainMethod",
    "StepOutput",
    "build_method",
    "method_class",
    "momentum_update",
]
