"""Datasets for bundles: cached training/validation data and the image list for inference."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from typing import Any

from monai.data import CacheDataset, Dataset, PersistentDataset

from shared_components.data.datalist import SECTIONS, load_datalist, resolve_entry
from shared_components.data.image_files import IMAGE_SUFFIXES
from shared_components.training.seeding import SeededDataset

CACHE_MODES = ("memory", "disk", "none")


def make_dataset(
    data: Sequence[dict[str, Any]],
    transform: Callable,
    cache: str = "memory",
    cache_dir: str | None = None,
    cache_rate: float = 1.0,
    num_workers: int | None = None,
    seed: int | None = None,
) -> Dataset | SeededDataset:
    """A dataset whose deterministic preprocessing is computed once.

    ``memory``: ``CacheDataset`` (small data); ``disk``: ``PersistentDataset`` in ``cache_dir`` (large data, reused
    across runs and processes); ``none``: plain ``Dataset``. With a ``seed`` (training data) it is wrapped in a
    :class:`~shared_components.training.seeding.SeededDataset`: case ``i``'s augmentation in epoch ``e`` comes from
    ``(seed, e, i)`` alone, so a resumed run, and any ``num_workers``, give the same patches.
    """
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}.")
    data = list(data)
    if cache == "memory":
        ds = CacheDataset(data, transform, cache_rate=cache_rate, num_workers=num_workers, progress=False)
    elif cache == "disk":
        if not cache_dir:
            raise ValueError("cache='disk' needs a cache_dir.")
        os.makedirs(cache_dir, exist_ok=True)
        ds = PersistentDataset(data, transform, cache_dir=cache_dir)
    else:
        ds = Dataset(data, transform)
    return ds if seed is None else SeededDataset(ds, seed)


def inference_items(source: str | Sequence[Any], base_dir: str | None = None) -> list[dict[str, Any]]:
    """``[{'image': ...}]`` for inference from a folder of images, a glob pattern, one image file, a datalist JSON
    (its ``test`` section, else every entry), or a list of paths (a nested list is one multi-channel case)."""
    if isinstance(source, str | os.PathLike):
        source = str(source)
        if os.path.isdir(source):
            files = sorted(f for f in glob.glob(os.path.join(source, "*")) if f.endswith(IMAGE_SUFFIXES))
        elif source.endswith(".json") and os.path.isfile(source):
            data = load_datalist(source)
            entries = data.get("test") or [e for s in SECTIONS for e in data.get(s, [])]
            items = [resolve_entry(e if isinstance(e, dict) else {"image": e}, base_dir, ("image",)) for e in entries]
            files = [{"image": e["image"]} for e in items]
        elif os.path.isfile(source):
            files = [source]
        else:
            files = sorted(glob.glob(source))
        if not files:
            raise FileNotFoundError(
                f"No images found for inference in {source!r}: give a folder of NIfTI images, a glob, a file, "
                "or a datalist JSON (override `--input_data <path>`)."
            )
    else:
        files = list(source)
    items = [f if isinstance(f, dict) else {"image": f} for f in files]
    missing = [
        p
        for it in items
        for p in ([it["image"]] if isinstance(it["image"], str) else it["image"])
        if not os.path.isfile(p)
    ]
    if missing:
        raise FileNotFoundError(f"{len(missing)} input image(s) do not exist, e.g. {missing[0]}.")
    return items
