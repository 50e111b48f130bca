"""Run-time pieces of the bundle workflow: the checks and help a ``python -m monai.bundle run`` command line gets
before anything runs, and the short summary a failed run ends with; what the run shows on its console (progress bar,
where its outputs went) and the warnings it does not show."""

from typing import TYPE_CHECKING

from shared_components.lazy import lazy_exports
from shared_components.workflow.invocation import check_invocation, describe_overrides, summary, unknown_overrides

if TYPE_CHECKING:  # imported on first use, see shared_components.lazy
    from shared_components.workflow.console import ProgressBar, is_on, report_evaluation, report_predictions
    from shared_components.workflow.quiet import quiet_warnings

__all__ = [
    "ProgressBar",
    "check_invocation",
    "describe_overrides",
    "is_on",
    "quiet_warnings",
    "report_evaluation",
    "report_predictions",
    "summary",
    "unknown_overrides",
]

lazy_exports(__name__)
