"""Compatibility path; the real code is in `crystallize.steps`."""

from crystallize.steps import PipelineStep, exit_step

__all__ = ["PipelineStep", "exit_step"]
