"""FrozenContext: add-only values, metrics, artifacts, zero-copy reads and pickling."""

from __future__ import annotations

import logging
import pickle
from types import MappingProxyType

import numpy as np
import pytest

from crystallize import ContextMutationError, CrystallizeError, FrozenContext, standalone_context
from crystallize.context import ArtifactLog, MetricsCollector

# --- add-only keys -----------------------------------------------------------


def test_initial_values_are_readable() -> None:
    ctx = FrozenContext({"a": 1, "b": "two"})
    assert ctx["a"] == 1
    assert ctx["b"] == "two"
    assert "a" in ctx and "missing" not in ctx
    assert sorted(ctx) == ["a", "b"]
    assert len(ctx) == 2


def test_setitem_adds_a_new_key() -> None:
    ctx = FrozenContext()
    ctx["fresh"] = 5
    ctx.add("other", 6)
    assert ctx["fresh"] == 5
    assert ctx["other"] == 6


def test_rebinding_with_setitem_raises_naming_the_key() -> None:
    ctx = FrozenContext({"learning_rate": 0.1})
    with pytest.raises(ContextMutationError, match="learning_rate"):
        ctx["learning_rate"] = 0.2
    assert ctx["learning_rate"] == 0.1


def test_rebinding_with_add_raises_naming_the_key() -> None:
    ctx = FrozenContext()
    ctx.add("seed_value", 1)
    with pytest.raises(ContextMutationError, match="seed_value"):
        ctx.add("seed_value", 1)  # even the same value may not be re-added
    assert ctx["seed_value"] == 1


def test_context_mutation_error_is_a_crystallize_error() -> None:
    ctx = FrozenContext({"k": 1})
    with pytest.raises(CrystallizeError):
        ctx["k"] = 2


def test_get_with_and_without_default() -> None:
    ctx = FrozenContext({"present": 0})
    assert ctx.get("present", 99) == 0
    assert ctx.get("absent") is None
    assert ctx.get("absent", 99) == 99


def test_missing_key_error_lists_available_keys() -> None:
    ctx = FrozenContext({"alpha": 1, "beta": 2})
    with pytest.raises(KeyError) as info:
        ctx["gamma"]
    message = str(info.value)
    assert "gamma" in message
    assert "alpha" in message and "beta" in message


def test_as_dict_is_read_only_and_not_a_copy() -> None:
    value = {"nested": [1, 2, 3]}
    ctx = FrozenContext({"x": value})
    view = ctx.as_dict()
    assert isinstance(view, MappingProxyType)
    assert view["x"] is value
    with pytest.raises(TypeError):
        view["x"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        view["y"] = 1  # type: ignore[index]
    # it is a live view: keys added later show up without a new call
    ctx.add("later", 3)
    assert view["later"] == 3


def test_reads_return_the_stored_object() -> None:
    payload = object()
    ctx = FrozenContext({"p": payload})
    assert ctx["p"] is payload
    assert ctx.get("p") is payload


def test_repr_lists_keys() -> None:
    assert "k1" in repr(FrozenContext({"k1": 1}))


def test_standalone_context_helper() -> None:
    ctx = standalone_context({"a": 1})
    assert isinstance(ctx, FrozenContext)
    assert ctx["a"] == 1
    assert len(standalone_context()) == 0


# --- metrics -------------------------------------------------------------------


def test_metrics_add_appends_in_order() -> None:
    ctx = FrozenContext()
    ctx.metrics.add("loss", 3.0)
    ctx.metrics.add("loss", 2.0)
    ctx.metrics.add("loss", 1.0)
    ctx.metrics.add("acc", 0.5)
    assert ctx.metrics["loss"] == (3.0, 2.0, 1.0)
    assert ctx.metrics["acc"] == (0.5,)
    assert list(ctx.metrics) == ["loss", "acc"]
    assert "loss" in ctx.metrics and "nope" not in ctx.metrics


def test_record_is_the_same_as_metrics_add() -> None:
    ctx = FrozenContext()
    ctx.record("total", 1)
    ctx.metrics.add("total", 2)
    ctx.record("total", 3, tags={"phase": "eval"})
    assert ctx.metrics["total"] == (1, 2, 3)
    assert ctx.metrics.get_tags("total")[2] == {"phase": "eval"}


def test_metrics_are_separate_from_context_keys() -> None:
    ctx = FrozenContext()
    ctx.record("score", 1)
    assert "score" not in ctx
    ctx.add("score", "a value")  # a metric name does not reserve the context key
    assert ctx["score"] == "a value"


def test_metric_name_must_be_a_non_empty_string() -> None:
    metrics = MetricsCollector()
    with pytest.raises(TypeError):
        metrics.add("", 1)
    with pytest.raises(TypeError):
        metrics.add(3, 1)  # type: ignore[arg-type]


def test_metrics_as_dict_is_read_only() -> None:
    metrics = MetricsCollector()
    metrics.add("m", 1)
    view = metrics.as_dict()
    assert view["m"] == (1,)
    with pytest.raises(TypeError):
        view["m"] = (2,)  # type: ignore[index]


# --- artifacts -------------------------------------------------------------------


def test_artifacts_add_bytes() -> None:
    ctx = FrozenContext()
    ctx.artifacts.add("model.bin", b"\x00\x01")
    ctx.artifacts.add("buf", bytearray(b"ab"))
    records = list(ctx.artifacts)
    assert [r.name for r in records] == ["model.bin", "buf"]
    assert records[0].data == b"\x00\x01"
    assert records[1].data == b"ab" and isinstance(records[1].data, bytes)
    assert len(ctx.artifacts) == 2


def test_artifacts_encode_str_as_utf8() -> None:
    log = ArtifactLog()
    log.add("notes.txt", "héllo")
    assert log.records[0].data == "héllo".encode()


def test_artifacts_reject_non_bytes() -> None:
    ctx = FrozenContext()
    with pytest.raises(TypeError, match="weights"):
        ctx.artifacts.add("weights", {"w": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ctx.artifacts.add("arr", np.zeros(3))  # type: ignore[arg-type]
    assert len(ctx.artifacts) == 0


# --- logger --------------------------------------------------------------------


def test_logger_exists_and_can_be_supplied() -> None:
    ctx = FrozenContext()
    assert isinstance(ctx.logger, logging.Logger)
    ctx.logger.debug("no error")
    custom = logging.getLogger("crystallize.test_custom")
    assert FrozenContext(logger=custom).logger is custom


# --- NumPy: read-only, zero-copy ------------------------------------------------


def test_numpy_arrays_are_stored_read_only() -> None:
    original = np.arange(5, dtype=np.float64)
    ctx = FrozenContext({"arr": original})
    stored = ctx["arr"]
    assert not stored.flags.writeable
    with pytest.raises(ValueError):
        stored[0] = 100.0
    assert np.shares_memory(stored, original)
    # the caller's array is untouched and still writeable
    assert original.flags.writeable
    assert original[0] == 0.0


def test_numpy_array_added_later_is_read_only() -> None:
    ctx = FrozenContext()
    ctx["arr"] = np.ones((2, 2))
    with pytest.raises(ValueError):
        ctx["arr"][0, 0] = 5.0
    with pytest.raises(ValueError):
        ctx.as_dict()["arr"][1, 1] = 5.0


def test_large_array_reads_are_the_same_object_without_copying() -> None:
    big = np.zeros(10 * 1024 * 1024 // 8, dtype=np.float64)  # 10 MB
    assert big.nbytes == 10 * 1024 * 1024
    ctx = FrozenContext({"big": big})
    first = ctx["big"]
    second = ctx["big"]
    assert first is second
    assert ctx.get("big") is first
    assert ctx.as_dict()["big"] is first
    assert np.shares_memory(first, big)
    assert first.base is big  # a view, not a copy


def test_already_read_only_array_is_stored_as_is() -> None:
    frozen = np.arange(3)
    frozen.flags.writeable = False
    ctx = FrozenContext({"a": frozen})
    assert ctx["a"] is frozen


# --- pickling -----------------------------------------------------------------------


def test_pickle_round_trips_keys_and_metrics() -> None:
    ctx = FrozenContext({"a": 1, "b": [1, 2], "arr": np.arange(4)})
    ctx.metrics.add("loss", 0.5)
    ctx.metrics.add("loss", 0.25)
    ctx.record("acc", 0.9)
    restored = pickle.loads(pickle.dumps(ctx))
    assert isinstance(restored, FrozenContext)
    assert sorted(restored) == ["a", "arr", "b"]
    assert restored["a"] == 1
    assert restored["b"] == [1, 2]
    np.testing.assert_array_equal(restored["arr"], np.arange(4))
    assert restored.metrics["loss"] == (0.5, 0.25)
    assert restored.metrics["acc"] == (0.9,)
    # the restored context keeps its guarantees
    with pytest.raises(ContextMutationError, match="'a'"):
        restored["a"] = 2
    with pytest.raises(ValueError):
        restored["arr"][0] = 9


def test_pickle_does_not_share_metrics_with_original() -> None:
    ctx = FrozenContext({"a": 1})
    ctx.record("m", 1)
    restored = pickle.loads(pickle.dumps(ctx))
    restored.record("m", 2)
    assert ctx.metrics["m"] == (1,)
    assert restored.metrics["m"] == (1, 2)
