"""The shared store: artifacts, step cache and run records over ``pyarrow.fs``."""

from .filesystem import Store
from .records import RunRecorder, claim_version, list_versions, load_outcomes

__all__ = ["RunRecorder", "Store", "claim_version", "list_versions", "load_outcomes"]
