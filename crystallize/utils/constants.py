"""Compatibility path; the real code is in `crystallize.constants`."""

from crystallize.constants import BASELINE_CONDITION, CONDITION_KEY, METADATA_FILENAME, REPLICATE_KEY, SEED_USED_KEY

__all__ = ["BASELINE_CONDITION", "CONDITION_KEY", "METADATA_FILENAME", "REPLICATE_KEY", "SEED_USED_KEY"]
