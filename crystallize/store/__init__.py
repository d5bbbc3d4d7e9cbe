"""The shared store: artifacts, step cache and run records over ``pyarrow.fs``."""

from .filesystem import Store
from .records import RunRecorder, claim_version, list_versions, load_outcomes
from .repository import RunLocation, RunRecords, RunRepository, parse_location

__all__ = [
    "RunLocation",
    "RunRecorder",
    "RunRecords",
    "RunRepository",
    "Store",
    "claim_version",
    "list_versions",
    "load_outcomes",
    "parse_location",
]
