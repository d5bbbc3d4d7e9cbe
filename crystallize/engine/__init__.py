"""The task-based engine: a frozen run spec, (condition, replicate) tasks, outcomes, and their fold."""

from .plan import ArtifactEntry, ErrorRecord, ReplicateOutcome, ReplicateTask, RunSpec, StepRecord

__all__ = ["ArtifactEntry", "ErrorRecord", "ReplicateOutcome", "ReplicateTask", "RunSpec", "StepRecord"]
