"""Upstream-style ``crystallize.pipelines`` paths (re-exports)."""

from crystallize.pipeline import Pipeline
from crystallize.steps import PipelineStep, exit_step

__all__ = ["Pipeline", "PipelineStep", "exit_step"]
