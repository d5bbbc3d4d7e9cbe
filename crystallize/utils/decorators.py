"""Compatibility path; the real code is in `crystallize.decorators`."""

from crystallize.decorators import (
    data_source,
    hypothesis,
    pipeline,
    pipeline_step,
    resource_factory,
    treatment,
    verifier,
)

__all__ = ["data_source", "hypothesis", "pipeline", "pipeline_step", "resource_factory", "treatment", "verifier"]
