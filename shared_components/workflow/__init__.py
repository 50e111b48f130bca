"""Run-time pieces of the bundle workflow: the checks and help a ``python -m monai.bundle run`` command line gets
before anything runs, and the short summary a failed run ends with."""

from shared_components.workflow.invocation import check_invocation, describe_overrides, summary, unknown_overrides

__all__ = ["check_invocation", "describe_overrides", "summary", "unknown_overrides"]
