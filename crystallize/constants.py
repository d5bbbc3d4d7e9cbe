"""Names shared by the driver, the workers and the store."""

BASELINE_CONDITION = "baseline"
REPLICATE_KEY = "replicate"
CONDITION_KEY = "condition"
SEED_USED_KEY = "seed_used"
METADATA_FILENAME = "run.json"

FRAMEWORK_KEYS = frozenset({REPLICATE_KEY, CONDITION_KEY, SEED_USED_KEY})
