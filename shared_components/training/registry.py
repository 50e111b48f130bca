"""One registry of the named presets (in the spirit of timm's model registry): losses, optimizers, LR schedulers
and augmentations, each registered once with its builder, a one-line description and its default search range.

``build_loss``/``build_optimizer``/``build_scheduler`` and ``transforms.augmentations`` dispatch through it, model
cards take their descriptions from it, and the README's preset table is :func:`markdown_table`. A search range maps
a bundle config key (MONAI ``#`` path, so it is also a CLI override) to Optuna-style arguments: ``{low, high, log}``
(``trial.suggest_float``) or ``{choices}`` (``trial.suggest_categorical``); ``{}`` when nothing beyond the preset's
name is worth searching.

Only the standard library is imported here: the modules that register each kind (:data:`PROVIDERS`) are imported on
first look-up, so ``transforms`` can register augmentations without ``training`` importing ``transforms``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# kind -> the module registering its presets (imported on the first look-up of that kind), named below the root
# package: ``shared_components``, or the package a bundle's vendored copy of this code lives in (``scripts``)
PROVIDERS = {
    "loss": "training.presets",
    "optimizer": "training.presets",
    "scheduler": "training.presets",
    "augmentation": "transforms.chains",
}
_ROOT = __name__.rsplit(".", 2)[0]
# kind -> the bundle config key that selects its preset
CONFIG_KEYS = {
    "loss": "loss_name",
    "optimizer": "optimizer_name",
    "scheduler": "scheduler_name",
    "augmentation": "augmentation_args#augmentation",
}
_RANGE_KEYS = {"low", "high", "log", "step"}
_REGISTRY: dict[str, dict[str, Preset]] = {kind: {} for kind in PROVIDERS}


@dataclass(frozen=True)
class Preset:
    """A named preset: ``builder`` makes it, ``description`` says what it is in one line (model cards, README),
    ``search`` is its default search range (config key -> ``{low, high, log}`` or ``{choices}``)."""

    kind: str
    name: str
    builder: Callable[..., Any] = field(repr=False)
    description: str
    search: Mapping[str, Mapping[str, Any]]


def _kind(kind: str) -> str:
    if kind not in PROVIDERS:
        raise ValueError(f"Unknown preset kind {kind!r}; choose one of: {', '.join(PROVIDERS)}.")
    return kind


def _check_range(where: str, spec: Mapping[str, Any]) -> None:
    if set(spec) == {"choices"}:
        if not list(spec["choices"]):
            raise ValueError(f"{where}: empty choices.")
        return
    if not {"low", "high"} <= set(spec) <= _RANGE_KEYS:
        raise ValueError(f"{where}: a range is {{low, high[, log, step]}} or {{choices}}, got {dict(spec)}.")
    if not spec["low"] < spec["high"] or (spec.get("log") and spec["low"] <= 0):
        raise ValueError(f"{where}: need low < high (and low > 0 with log), got {dict(spec)}.")


def register(
    kind: str, name: str, *, description: str, search: Mapping[str, Mapping[str, Any]]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering its function as the builder of preset ``name`` of ``kind`` (returned unchanged)."""
    presets = _REGISTRY[_kind(kind)]
    if name in presets:
        raise ValueError(f"{kind} preset {name!r} is already registered.")
    if not description.strip():
        raise ValueError(f"{kind} preset {name!r} needs a description.")
    for key, spec in search.items():
        _check_range(f"{kind} preset {name!r}, {key}", spec)

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        presets[name] = Preset(kind, name, builder, description, {k: dict(v) for k, v in search.items()})
        return builder

    return decorator


def _load(kind: str) -> dict[str, Preset]:
    module = f"{_ROOT}.{PROVIDERS[_kind(kind)]}"
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:  # a vendored copy without that module has only what it registered
        if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
            raise
    return _REGISTRY[kind]


def presets(kind: str) -> tuple[Preset, ...]:
    """The presets of ``kind`` in registration order."""
    return tuple(_load(kind).values())


def names(kind: str) -> tuple[str, ...]:
    """The preset names of ``kind`` in registration order."""
    return tuple(_load(kind))


def get(kind: str, name: str) -> Preset:
    """The preset ``name`` of ``kind`` (case-insensitive, ``-`` read as ``_``); unknown names raise a
    ``ValueError`` listing the known ones."""
    registered = _load(kind)
    key = str(name).lower().replace("-", "_")
    if key not in registered:
        raise ValueError(f"Unknown {kind} {key!r}; choose one of: {', '.join(registered)}.")
    return registered[key]


def _format_range(key: str, spec: Mapping[str, Any]) -> str:
    if "choices" in spec:
        return f"`{key}` in {{{', '.join(str(c) for c in spec['choices'])}}}"
    return f"`{key}` {spec['low']:g} to {spec['high']:g}" + (" (log)" if spec.get("log") else "")


def markdown_table(kinds: tuple[str, ...] = tuple(PROVIDERS)) -> str:
    """The README's preset table: one row per preset with its override, description and default search range."""
    rows = ["| override | preset | what it is | default search range |", "|---|---|---|---|"]
    for kind in kinds:
        for i, p in enumerate(presets(kind)):
            search = "; ".join(_format_range(k, s) for k, s in p.search.items()) or "-"
            override = f"`--{CONFIG_KEYS[kind]}`" if i == 0 else ""
            rows.append(f"| {override} | `{p.name}` | {p.description} | {search} |")
    return "\n".join(rows) + "\n"
