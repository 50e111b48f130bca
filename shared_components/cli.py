"""Shared entry point for the ``scripts/`` command-line tools: ``fire`` parsing with friendly errors."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import fire

from shared_components.data.errors import DataValidationError


def run(commands: Mapping[str, Callable[..., Any]] | Callable[..., Any], name: str | None = None) -> None:
    """Run ``commands`` with ``fire``; input errors print one clear message (no traceback) and exit with 2."""
    try:
        fire.Fire(commands, name=name)
    except (DataValidationError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
