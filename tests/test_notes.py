"""``crystallize.tracebacks.add_note``: ``BaseException.add_note`` on 3.11+, a fallback on 3.10."""

from __future__ import annotations

import traceback
from typing import Any

import pytest

from crystallize import (
    Experiment,
    ExperimentGraph,
    FrozenContext,
    Pipeline,
    PipelineStep,
    SerialExecution,
    data_source,
    tracebacks,
)
from crystallize.tracebacks import add_note


@pytest.fixture(params=["native", "fallback"])
def note_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both code paths on any Python: "fallback" is what 3.10 runs (no ``add_note``)."""
    if request.param == "native" and not hasattr(BaseException, "add_note"):
        pytest.skip("BaseException.add_note is Python 3.11+")
    if request.param == "fallback":
        monkeypatch.setattr(tracebacks, "_HAS_ADD_NOTE", False)
    return str(request.param)


def test_notes_are_kept_in_order(note_mode: str) -> None:
    exc = ValueError("boom")
    add_note(exc, "first")
    add_note(exc, "second")
    assert exc.__notes__ == ["first", "second"]


def test_a_traceback_shows_the_note(note_mode: str) -> None:
    exc = ValueError("boom")
    add_note(exc, "(while running experiment 'a' of the graph)")
    text = "".join(traceback.format_exception(exc))
    assert "ValueError: boom" in text
    assert "(while running experiment 'a' of the graph)" in text


def test_the_fallback_appends_to_a_plain_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracebacks, "_HAS_ADD_NOTE", False)
    exc = RuntimeError("boom")
    add_note(exc, "a note")
    assert str(exc) == "boom\na note"
    assert exc.args == ("boom\na note",)


class _Formatted(Exception):
    def __str__(self) -> str:
        return "formatted"


@pytest.mark.parametrize(
    "exc",
    [KeyError("key"), OSError(2, "No such file"), _Formatted("x"), ValueError("a", "b"), ValueError(3)],
    ids=["KeyError", "OSError", "own __str__", "two args", "non-str arg"],
)
def test_the_fallback_keeps_other_messages_as_they_are(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    monkeypatch.setattr(tracebacks, "_HAS_ADD_NOTE", False)
    before = (str(exc), exc.args)
    add_note(exc, "a note")
    assert (str(exc), exc.args) == before
    assert exc.__notes__ == ["a note"]


@data_source
def one(ctx: FrozenContext) -> int:
    return 1


class _BrokenSetup(PipelineStep):
    def setup(self, ctx: FrozenContext) -> None:
        raise RuntimeError("setup broke")

    def __call__(self, data: Any, ctx: FrozenContext) -> Any:
        return data


def test_a_graph_names_the_experiment_that_failed(
    note_mode: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    experiment = Experiment(
        one(), Pipeline([_BrokenSetup()]), [SerialExecution(progress=False)], name="broken", replicates=1
    )
    with pytest.raises(Exception, match="setup broke") as caught:
        ExperimentGraph(experiment).run()
    assert "(while running experiment 'broken' of the graph)" in caught.value.__notes__
