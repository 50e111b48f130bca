"""Number formatting of the Markdown reports (evaluation summaries, cross-validation, leaderboard): a missing value
(``None``, NaN, not a number) is written ``-``."""

from __future__ import annotations

import math
import numbers
from typing import Any

MISSING = "-"


def is_number(v: Any) -> bool:
    """A real number that is not NaN (``None``, NaN, strings and ``pd.NA`` are missing values)."""
    return isinstance(v, numbers.Real) and v == v


def _finite(v: Any) -> bool:
    return is_number(v) and math.isfinite(v)


def fmt_num(v: Any, digits: int = 3) -> str:
    """``0.881`` (``digits`` decimals), or ``-`` for a missing value."""
    return f"{v:.{digits}f}" if is_number(v) else MISSING


def fmt_p(p: Any) -> str:
    """A p-value: ``0.226``, ``<0.001``, or ``-`` for a missing value."""
    if not is_number(p):
        return MISSING
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_ci(mean: Any, lo: Any = None, hi: Any = None, digits: int = 3) -> str:
    """``0.881 [0.872, 0.889]``; the mean alone without a finite interval, ``-`` without a finite mean."""
    if not _finite(mean):
        return MISSING
    if not (_finite(lo) and _finite(hi)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
