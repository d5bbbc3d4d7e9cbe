"""Every import path a user of the seeds or of upstream Crystallize writes resolves to the one real object."""

from __future__ import annotations

import importlib

import pytest

import crystallize

PATHS = {
    "crystallize.core.context": ["FrozenContext", "ContextMutationError"],
    "crystallize.core.pipeline": ["Pipeline"],
    "crystallize.core.pipeline_step": ["PipelineStep", "exit_step"],
    "crystallize.core.experiment": ["Experiment"],
    "crystallize.core.optimizers": ["BaseOptimizer", "Objective"],
    "crystallize.core.treatment": ["Treatment"],
    "crystallize.experiments": ["Experiment", "Hypothesis", "Treatment", "Result", "BaseOptimizer", "Objective"],
    "crystallize.experiments.experiment": ["Experiment"],
    "crystallize.experiments.experiment_builder": ["ExperimentBuilder"],
    "crystallize.experiments.treatment": ["Treatment"],
    "crystallize.experiments.hypothesis": ["Hypothesis"],
    "crystallize.experiments.optimizers": ["BaseOptimizer", "Objective"],
    "crystallize.experiments.result": ["Result"],
    "crystallize.experiments.result_structs": ["ExperimentMetrics", "HypothesisResult", "TreatmentMetrics"],
    "crystallize.pipelines": ["Pipeline", "PipelineStep"],
    "crystallize.pipelines.pipeline": ["Pipeline"],
    "crystallize.pipelines.pipeline_step": ["PipelineStep", "exit_step"],
    "crystallize.plugins": ["ArtifactPlugin", "BasePlugin", "LoggingPlugin", "SeedPlugin", "ParallelExecution"],
    "crystallize.plugins.plugins": ["ArtifactPlugin", "BasePlugin", "LoggingPlugin", "SeedPlugin"],
    "crystallize.plugins.execution": ["SerialExecution", "ParallelExecution", "AsyncExecution"],
    "crystallize.datasources": ["DataSource"],
    "crystallize.datasources.datasource": ["DataSource", "ExperimentInput"],
    "crystallize.utils": ["FrozenContext", "ContextMutationError", "ValidationError"],
    "crystallize.utils.context": ["FrozenContext", "ContextMutationError"],
    "crystallize.utils.decorators": ["data_source", "pipeline_step", "treatment", "hypothesis", "verifier"],
    "crystallize.utils.exceptions": ["ContextMutationError", "ValidationError", "MissingMetricError"],
}


@pytest.mark.parametrize("module_name", sorted(PATHS))
def test_module_path_reexports_the_public_object(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in PATHS[module_name]:
        obj = getattr(module, name)
        if hasattr(crystallize, name):
            assert obj is getattr(crystallize, name), f"{module_name}.{name} is a second copy"


def test_top_level_all_is_importable() -> None:
    for name in crystallize.__all__:
        assert getattr(crystallize, name) is not None


def test_crystallize_does_not_import_ray() -> None:
    import subprocess
    import sys

    code = "import sys, crystallize; import crystallize.experiment; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
