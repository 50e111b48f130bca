"""Components shared by every bundle of the collection: data, transforms, networks, training and evaluation.

Submodules load on first use, so ``$import shared_components`` in a bundle config stays cheap.
"""

import importlib

__version__ = "0.1.0"
_SUBMODULES = (
    "bundle",
    "data",
    "evaluation",
    "experiments",
    "networks",
    "paths",
    "planning",
    "shipping",
    "training",
    "transforms",
    "workflow",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
