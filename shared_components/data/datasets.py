"""Datasets for bundles: cached training/validation data and the image list for inference.

Loading a case never fails silently or anonymously:

* every training/validation dataset raises :class:`CaseLoadError` (naming the case, its files and the root cause)
  when loading or preprocessing an item fails;
* ``memory`` caching loads every case before training, waits for all its loader threads, then raises one
  :class:`~shared_components.data.errors.DataValidationError` listing every case that failed;
* ``disk`` cache entries are written atomically in the cache folder itself (temporary file, fsync, rename: MONAI's
  own writer moves from the system temp folder, a non-atomic copy across file systems) and verified when read: an
  entry that does not load (truncated by a kill, corrupt) or holds something else is rebuilt, with a warning. The
  key covers the case's files' size and modification time, so a changed file is preprocessed again.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import SUPPORTED_PICKLE_MOD, pickle_hashing
from monai.utils import convert_to_tensor, look_up_option
from torch.utils.data import Dataset as TorchDataset

from shared_components.data.datalist import SECTIONS, load_datalist, resolve_entry, subject_of
from shared_components.data.errors import DataValidationError, Problem
from shared_components.data.image_files import IMAGE_SUFFIXES, read_array
from shared_components.data.seeding import SeededDataset
from shared_components.files import atomic_path

logger = logging.getLogger(__name__)

CACHE_MODES = ("memory", "disk", "none")
FIX_LOAD = (
    "re-copy or re-export the file (`prepare_data.py check <datalist> --level full` lists every such file), or "
    "remove the case from the datalist"
)
STALE_TEMP_SECONDS = 3600  # temporaries of killed cache writes older than this are removed


# ---- naming the case that failed -------------------------------------------------------------------------------


def case_files(item: Any) -> list[str]:
    """The image and label files of a datalist entry (``[]`` for anything else)."""
    if not isinstance(item, dict):
        return []
    files: list[str] = []
    for key in ("image", "label"):
        value = item.get(key)
        files += [value] if isinstance(value, str) else [v for v in value or () if isinstance(v, str)]
    return files


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception below ``error``'s chain (MONAI wraps a transform's error in ``applying transform``)."""
    seen = {id(error)}
    while True:
        inner = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if inner is None or id(inner) in seen:
            return error
        seen.add(id(inner))
        error = inner


def _readable(path: str) -> bool:
    try:
        read_array(path)
    except (ValueError, OSError):
        return False
    return True


def _reason(error: BaseException) -> str:
    root = root_cause(error)
    text = " ".join(str(root).split())
    return f"{type(root).__name__}: {text[:300]}" if text else type(root).__name__


class CaseLoadError(RuntimeError):
    """Loading or preprocessing one case failed; the message names the case, its files and the root cause."""

    def __init__(self, message: str, case: str = "", files: Sequence[str] = (), reason: str = ""):
        super().__init__(message)
        self.case, self.files, self.reason = case, list(files), reason

    def __str__(self) -> str:
        return str(self.args[0])

    @classmethod
    def of(cls, item: Any, error: BaseException) -> CaseLoadError:
        """The error for datalist entry ``item`` failing with ``error``; ``files`` are those that do not read (all of
        the case's when each reads: the preprocessing failed)."""
        files = case_files(item)
        case = subject_of(item) if isinstance(item, dict) and "image" in item else "?"
        bad = [f for f in files if not _readable(f)] or files
        reason = _reason(error)
        where = ", ".join(bad) if bad else repr(item)
        return cls(f"case {case} could not be loaded: {where}: {reason}", case, bad, reason)

    def __reduce__(self) -> tuple[type, tuple[str, str, list[str], str]]:
        return type(self), (str(self), self.case, self.files, self.reason)


class CaseDataset(TorchDataset):
    """``dataset`` whose items raise :class:`CaseLoadError` naming their case when loading fails; its other
    attributes (``data``, ``transform``, ...) are the wrapped dataset's."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: Any) -> Any:
        try:
            return self.dataset[index]
        except CaseLoadError:
            raise
        except Exception as e:
            data = getattr(self.dataset, "data", None)
            if not isinstance(index, int) or data is None:
                raise
            raise CaseLoadError.of(data[index], e) from e

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


# ---- memory: every case loaded before training, every failure listed --------------------------------------------


class LoadedCacheDataset(CacheDataset):
    """MONAI's ``CacheDataset`` whose cache filling waits for every loader thread and then lists every case that
    failed (MONAI's thread pool stops at the first error while other threads still run, which can abort the
    process at exit: ``terminate called without an active exception``)."""

    def _fill_cache(self, indices: Sequence[int] | None = None) -> list:
        if self.cache_num <= 0:
            return []
        indices = list(range(self.cache_num)) if indices is None else list(indices)
        workers = self.num_workers or os.cpu_count() or 1
        results: list[Any] = []
        problems: list[Problem] = []
        with ThreadPoolExecutor(max_workers=workers) as pool:  # leaving the block joins every thread
            futures = [pool.submit(self._load_cache_item, i) for i in indices]
            for i, future in zip(indices, futures, strict=True):
                try:
                    results.append(future.result())
                except Exception as e:
                    error = CaseLoadError.of(self.data[i], e)
                    for f in error.files or ["-"]:
                        problems.append(Problem(error.case, f, f"loading failed: {error.reason}", FIX_LOAD))
                    results.append(None)
        if problems:
            raise DataValidationError(problems, source="the cases loaded into the memory cache")
        return results


# ---- disk: atomic entries, verified when read -------------------------------------------------------------------


def entry_hash(item: Any) -> bytes:
    """Cache key of a datalist entry: the entry and its files' size and modification time."""
    stats = []
    for f in case_files(item):
        try:
            st = os.stat(f)
        except OSError:
            continue
        stats.append((f, st.st_size, st.st_mtime_ns))
    return pickle_hashing({"item": item, "files": stats})


def _expected_keys(item: Any) -> set[str]:
    return {k for k in ("image", "label") if isinstance(item, dict) and k in item}


class VerifiedPersistentDataset(PersistentDataset):
    """MONAI's ``PersistentDataset`` with entries written atomically in ``cache_dir`` and rebuilt when they do not
    load or lack the item's keys (see the module docstring)."""

    def __init__(self, data: Sequence, transform: Callable, cache_dir: str | os.PathLike, **kwargs: Any):
        kwargs.setdefault("hash_func", entry_hash)
        super().__init__(data, transform, cache_dir=cache_dir, **kwargs)
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        if self.cache_dir is None:
            return
        now = time.time()
        for tmp in self.cache_dir.glob(".*.tmp"):
            try:
                if now - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                    tmp.unlink()
            except OSError:
                pass

    def entry_path(self, item: Any) -> Path | None:
        """The cache file of datalist entry ``item`` (``None`` without a cache folder)."""
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{self.hash_func(item).decode('utf-8')}{self.transform_hash}.pt"

    def _load_entry(self, path: Path, item: Any) -> Any:
        try:
            value = torch.load(path, weights_only=self.weights_only)
        except (FileNotFoundError, MemoryError):
            raise
        except Exception as e:
            problem = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        else:
            keys = _expected_keys(item)
            if not isinstance(value, dict) or not keys <= set(value):
                problem = f"it holds {type(value).__name__}, not the keys {sorted(keys)}"
            else:
                return value
        logger.warning(f"disk cache entry {path} is unreadable ({problem}): rebuilding it")
        path.unlink(missing_ok=True)
        return None

    def _cachecheck(self, item_transformed: Any) -> Any:
        path = self.entry_path(item_transformed)
        if path is not None and path.is_file():
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile (another process rebuilding it)
                cached = self._load_entry(path, item_transformed)
                if cached is not None:
                    return cached
        value = self._pre_transform(deepcopy(item_transformed))  # keep the original hashed
        if path is None:
            return value
        try:
            with atomic_path(path) as tmp:
                torch.save(
                    obj=convert_to_tensor(value, convert_numeric=False, track_meta=self.track_meta),
                    f=tmp,
                    pickle_module=look_up_option(self.pickle_module, SUPPORTED_PICKLE_MOD),
                    pickle_protocol=self.pickle_protocol,
                )
        except OSError as e:  # a read-only or full cache folder: train on, uncached
            logger.warning(f"cannot write disk cache entry {path} ({e}); this case is not cached")
        return value


# ---- the datasets the bundles build -----------------------------------------------------------------------------


def make_dataset(
    data: Sequence[dict[str, Any]],
    transform: Callable,
    cache: str = "memory",
    cache_dir: str | None = None,
    cache_rate: float = 1.0,
    num_workers: int | None = None,
    seed: int | None = None,
) -> CaseDataset | SeededDataset:
    """A dataset whose deterministic preprocessing is computed once, naming the case when one fails to load.

    ``memory``: a ``CacheDataset`` filled before training (small data); ``disk``: a ``PersistentDataset`` in
    ``cache_dir`` (large data, reused across runs and processes); ``none``: plain ``Dataset``. With a ``seed``
    (training data) it is wrapped in a :class:`~shared_components.data.seeding.SeededDataset`: case ``i``'s
    augmentation in epoch ``e`` comes from ``(seed, e, i)`` alone, so a resumed run, and any ``num_workers``, give
    the same patches.
    """
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}.")
    data = list(data)
    if cache == "memory":
        ds = LoadedCacheDataset(data, transform, cache_rate=cache_rate, num_workers=num_workers, progress=False)
    elif cache == "disk":
        if not cache_dir:
            raise ValueError("cache='disk' needs a cache_dir.")
        os.makedirs(cache_dir, exist_ok=True)
        ds = VerifiedPersistentDataset(data, transform, cache_dir=cache_dir)
    else:
        ds = Dataset(data, transform)
    named = CaseDataset(ds)
    return named if seed is None else SeededDataset(named, seed)


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
