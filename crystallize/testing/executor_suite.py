"""The behavioural suite every executor must pass: results do not depend on the executor.

Every test runs a scenario under the executor being tested and under ``SerialExecution``
(the reference), and asserts the results are exactly equal per (condition, replicate):
metrics, artifact bytes, cache-hit flags, hypothesis results, optimizer history and winner.

Part A covers run, optimize, resume, cache hits, artifacts, plugin hooks, apply and seeds.
Part B covers the reproducibility promise in its harder corners: ``ctx.rng``, per-replicate
copies of ``initial_ctx``, a cache that never changes an answer (context reads, random
draws, edited helpers), warnings for settings nothing reads, a search that depends on the
optimizer and not the machine, and tracebacks that name the user's file.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
import pytest

from crystallize import (
    BasePlugin,
    DataSource,
    Experiment,
    GridSearchOptimizer,
    Objective,
    Pipeline,
    PipelineStep,
    RandomSearchOptimizer,
    Result,
    SeedPlugin,
    SerialExecution,
    Treatment,
    ValidationError,
    exit_step,
)
from crystallize.plugins.execution import ExecutionPlugin
from crystallize.store.locations import LEGACY_CACHE_ENV, NO_CACHE_ENV

from .steps import (
    EXEC_LOG,
    FAIL_FLAG,
    HookStamp,
    add_delta,
    after_scale,
    append_seen,
    cached_ctx_delta,
    cached_global_normal,
    cached_rng_normal,
    cached_scale,
    draws,
    fragile_value,
    must_not_run,
    noisy_total,
    ramp,
    rng_draw,
    seeded_artifacts,
    total,
    total_shift,
    value_shift,
    zero,
)

SEED = 1234
SHIFT = Treatment("shift", {"delta": 1.0})


# ---------------------------------------------------------------- helpers


def serial() -> SerialExecution:
    return SerialExecution(progress=False)


def make(
    execution: BasePlugin,
    steps: list[PipelineStep],
    *,
    name: str = "inv",
    source: DataSource | None = None,
    treatments: tuple[Treatment, ...] = (SHIFT,),
    replicates: int = 3,
    plugins: tuple[BasePlugin, ...] = (),
    initial_ctx: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Experiment:
    """An experiment of the suite: seeded, with ``workdir`` (this folder) in its context."""
    return Experiment(
        source if source is not None else draws(),
        Pipeline(list(steps)),
        [SeedPlugin(seed=SEED), *plugins, execution],
        name=name,
        treatments=list(treatments),
        replicates=replicates,
        initial_ctx={"workdir": os.getcwd(), **(initial_ctx or {})},
        **kwargs,
    )


def both(build: Callable[[BasePlugin, str], Experiment], execution: BasePlugin) -> tuple[Experiment, Experiment]:
    """The scenario under the executor ('inv') and under serial ('ref')."""
    return build(execution, "inv"), build(serial(), "ref")


def per_replicate(result: Result) -> dict[tuple[str, int, str], list[Any]]:
    """Every metric value keyed by (condition, replicate, metric), in recording order."""
    return {
        (condition, replicate, metric): values
        for condition, tm in result.metrics.conditions()
        for metric in tm.metrics
        for replicate, values in tm.by_replicate(metric).items()
    }


def metric_of(result: Result, metric: str) -> dict[tuple[str, int], list[Any]]:
    return {(c, r): v for (c, r, m), v in per_replicate(result).items() if m == metric}


def cache_hits(result: Result) -> dict[str, list[tuple[int, str]]]:
    """Per condition, the (replicate, step) pairs served from the cache."""
    return {c: sorted(tuple(hit) for hit in hits) for c, hits in result.provenance["cache_hits"].items()}


def all_hits(conditions: list[str], replicates: int, step: str) -> dict[str, list[tuple[int, str]]]:
    return {c: [(r, step) for r in range(replicates)] for c in conditions}


def hypotheses(result: Result) -> list[tuple[Any, ...]]:
    return [(h.name, h.results, h.ranking, h.dropped_pairs, h.errors) for h in result.metrics.hypotheses]


def assert_no_errors(result: Result) -> None:
    assert result.errors == {}, {key: str(e) for key, e in result.errors.items()}


def assert_same(result: Result, reference: Result) -> None:
    """Exactly the same values per (condition, replicate) and the same seeds."""
    assert per_replicate(result) == per_replicate(reference)
    assert result.provenance["seeds"] == reference.provenance["seeds"]
    assert set(result.errors) == set(reference.errors)
    for condition, errors in result.replicate_errors.items():
        assert set(errors) == set(reference.replicate_errors[condition])


def stored_artifacts(experiment: str, version: int = 0) -> dict[tuple[int, str, str, str], bytes]:
    """data/<exp>/v<N>/replicate_<i>/<condition>/<step>/<name> -> bytes."""
    root = Path("data") / experiment / f"v{version}"
    found = {}
    for path in root.glob("replicate_*/*/*/*"):
        replicate, condition, step = path.parent.parent.parent.name, path.parent.parent.name, path.parent.name
        found[(int(replicate.removeprefix("replicate_")), condition, step, path.name)] = path.read_bytes()
    return found


def manifest(result: Result) -> dict[str, list[tuple[str, str, int, str]]]:
    return {
        condition: sorted((e.step, e.name, e.size, e.checksum) for e in entries)
        for condition, entries in result.artifact_entries.items()
    }


def executions(label: str) -> list[tuple[str, int]]:
    """The (condition, replicate) pairs a counting step ran for, from the execution log."""
    path = Path(EXEC_LOG)
    if not path.exists():
        return []
    rows = [line.split(",") for line in path.read_text().splitlines() if line]
    return sorted((row[1], int(row[2])) for row in rows if row[0] == label)


def history(optimizer: GridSearchOptimizer | RandomSearchOptimizer) -> list[tuple[str, dict[str, Any], Any]]:
    """Candidate, parameters and objective of each trial row (not its wall time, which no executor repeats)."""
    return [(row["candidate"], row["params"], row["objective"]) for row in optimizer.history]


def warning_texts(records: list[logging.LogRecord], needle: str) -> list[str]:
    return [r.getMessage() for r in records if r.levelno >= logging.WARNING and needle in r.getMessage()]


def json_under_warning_keys(value: Any) -> Iterator[str]:
    """The JSON text of every value stored under a key whose name contains 'warning'."""
    if isinstance(value, dict):
        for key, item in value.items():
            if "warning" in str(key).lower():
                yield json.dumps(item)
            yield from json_under_warning_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_under_warning_keys(item)


def rewrite(module: ModuleType, source: str) -> ModuleType:
    """Edit a user module on disk and reload it (the same module object, new code)."""
    assert module.__file__ is not None, f"module {module.__name__} has no file to rewrite"
    Path(module.__file__).write_text(source)
    importlib.invalidate_caches()
    return importlib.reload(module)


HELPER_SOURCE = """
from crystallize import pipeline_step


def helper(x):
    return x + {constant}


@pipeline_step(cacheable=True)
def uses_helper(data, ctx):
    value = helper(data)
    return value, {{"helped": value}}
"""

FAILING_SOURCE = """
from crystallize import pipeline_step


@pipeline_step
def user_failure(data, ctx):
    if ctx["replicate"] == 1:
        raise ValueError("user module refuses replicate one")
    return data, {"ok": 1}
"""


# ================================================================ the suite


class ExecutorConformance:
    """Subclass this in a test module of your own and say which execution plugin to test.

    Either override :meth:`make_execution`::

        from crystallize.testing import ExecutorConformance

        class TestMyExecutor(ExecutorConformance):
            def make_execution(self):
                return MyExecution(progress=False)

    or override the ``execution`` fixture (to parametrize it, or to need other fixtures
    first, such as a running cluster). Then ``pytest`` runs every test below against your
    executor. The suite runs each test in its own ``tmp_path`` and reads files the workers
    wrote there, so tests that need workers to see the driver's files skip when the
    executor says they do not (``Executor.shares_driver_filesystem``). Steps live in
    :mod:`crystallize.testing.steps`, which workers import from the installed package.
    """

    def make_execution(self) -> ExecutionPlugin:
        """The execution plugin under test; a fresh one per call."""
        raise NotImplementedError(
            f"{type(self).__name__}: override make_execution() (or the `execution` fixture) to return "
            "the execution plugin to test"
        )

    @pytest.fixture
    def execution(self) -> ExecutionPlugin:
        return self.make_execution()

    @pytest.fixture(autouse=True)
    def _conformance_workdir(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        """``data/``, ``.cache/`` and the execution log land in a fresh folder per test."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv(LEGACY_CACHE_ENV, raising=False)
        return tmp_path

    @pytest.fixture(params=["cache-on", "cache-off"])
    def cache_mode(self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
        """The step cache on (default) or off (``CRYSTALLIZE_NO_CACHE=1``) for the whole test."""
        if request.param == "cache-off":
            monkeypatch.setenv(NO_CACHE_ENV, "1")
        else:
            monkeypatch.delenv(NO_CACHE_ENV, raising=False)
        return request.param

    @pytest.fixture
    def user_module(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Any]]:
        """Write a module outside any package and import it; workers get its code by value (cloudpickle)."""
        monkeypatch.setattr(sys, "dont_write_bytecode", True)
        monkeypatch.syspath_prepend(str(tmp_path))
        loaded: list[Any] = []

        def write(source: str) -> Any:
            name = f"inv_user_{uuid.uuid4().hex[:10]}"
            (tmp_path / f"{name}.py").write_text(source)
            module = importlib.import_module(name)
            cloudpickle.register_pickle_by_value(module)
            loaded.append(module)
            return module

        yield write
        for module in loaded:
            cloudpickle.unregister_pickle_by_value(module)
            sys.modules.pop(module.__name__, None)

    @staticmethod
    def require_driver_filesystem(execution: ExecutionPlugin) -> None:
        """Skip a test that reads files workers wrote, or a local cache they filled, when they cannot."""
        execution.prepare()
        if not execution.create_executor().shares_driver_filesystem:
            pytest.skip("the executor's workers do not see the driver's files (shares_driver_filesystem is False)")

    # ============================================================ Part A: runs, caches, hooks

    def test_run_metrics_and_hypotheses_match_serial(self, execution: ExecutionPlugin) -> None:
        def build(plugin, name):
            return make(plugin, [add_delta(), noisy_total()], name=name, replicates=4, hypotheses=[total_shift])

        exp, ref = both(build, execution)
        result, reference = exp.run(), ref.run()

        assert_no_errors(result)
        assert_same(result, reference)
        assert result.metrics.baseline.metrics == reference.metrics.baseline.metrics
        assert result.metrics.treatments["shift"].metrics == reference.metrics.treatments["shift"].metrics
        assert hypotheses(result) == hypotheses(reference)
        found = result.get_hypothesis("total_shift")
        assert found is not None
        assert 0.0 <= found.results["shift"]["p_value"] <= 1.0
        pytest.importorskip("pandas")
        frame = result.to_pandas().sort_values(["condition", "metric", "replicate"]).reset_index(drop=True)
        expected = reference.to_pandas().sort_values(["condition", "metric", "replicate"]).reset_index(drop=True)
        assert frame.equals(expected)

    def test_seeds_and_global_draws_match_serial(self, execution: ExecutionPlugin) -> None:
        def build(plugin, name):
            return make(plugin, [noisy_total()], name=name, replicates=4)

        exp, ref = both(build, execution)
        result, reference = exp.run(), ref.run()

        assert_no_errors(result)
        for metric in ("seed", "py_draw", "np_draw"):
            assert metric_of(result, metric) == metric_of(reference, metric)
        seeds = metric_of(result, "seed")
        assert len({seeds[("baseline", r)][0] for r in range(4)}) == 4  # a seed per replicate
        assert all(seeds[("shift", r)] == seeds[("baseline", r)] for r in range(4))  # common to the conditions
        draws_seen = metric_of(result, "np_draw")
        assert all(draws_seen[("shift", r)] == draws_seen[("baseline", r)] for r in range(4))
        assert result.provenance["seeds"] == reference.provenance["seeds"]
        assert result.provenance["root_seed"] == SEED

    @pytest.mark.parametrize("batch", ["grid", "random"])
    def test_optimize_matches_serial(self, execution: ExecutionPlugin, batch: str) -> None:
        def optimizer():
            if batch == "grid":
                return GridSearchOptimizer({"delta": [1.0, -1.0, 0.5, -0.5]}, Objective("total"), batch_size=2)
            return RandomSearchOptimizer({"delta": (-2.0, 2.0)}, Objective("total"), batch_size=2, seed=0)

        def search(plugin, name):
            exp = make(plugin, [add_delta(), noisy_total()], name=name, treatments=())
            opt = optimizer()
            best = exp.optimize(opt, num_trials=2, replicates_per_trial=3)
            return exp, opt, best

        exp, opt, best = search(execution, "inv")
        ref, ref_opt, ref_best = search(serial(), "ref")

        assert len(opt.history) == 4
        assert history(opt) == history(ref_opt)
        assert (best.name, dict(best.apply_map)) == (ref_best.name, dict(ref_best.apply_map))
        assert_no_errors(exp.last_optimization)
        assert per_replicate(exp.last_optimization) == per_replicate(ref.last_optimization)

    def test_resume_matches_serial(self, execution: ExecutionPlugin) -> None:
        self.require_driver_filesystem(execution)

        def build(plugin, name):
            return make(plugin, [add_delta(), fragile_value()], name=name, hypotheses=[value_shift])

        Path(FAIL_FLAG).write_text("shift,1\n")
        first = build(execution, "inv").run()
        assert set(first.errors) == {"shift_rep_1"} and set(first.replicate_errors["shift"]) == {1}
        assert len(executions("fragile_value")) == 6
        Path(FAIL_FLAG).unlink()

        resumed = build(execution, "inv").run(strategy="resume")
        assert executions("fragile_value").count(("shift", 1)) == 2
        assert len(executions("fragile_value")) == 7
        again = build(execution, "inv").run(strategy="resume")
        assert len(executions("fragile_value")) == 7  # a finished run has nothing left to execute
        reference = build(serial(), "ref").run()

        for result, reused in ((resumed, 5), (again, 6)):
            assert_no_errors(result)
            assert result.provenance["resumed"] == {"version": 0, "reused": reused}
            assert_same(result, reference)
            assert hypotheses(result) == hypotheses(reference)
        kept = metric_of(first, "value")
        assert {k: v for k, v in metric_of(resumed, "value").items() if k in kept} == kept

    @pytest.mark.parametrize("order", ["serial-first", "executor-first"])
    def test_cache_hits_across_executors(self, execution: ExecutionPlugin, order: str) -> None:
        self.require_driver_filesystem(execution)
        factor = Treatment("triple", {"factor": 3.0})

        def build(plugin):
            return make(plugin, [cached_scale(), after_scale()], source=ramp(), treatments=(factor,))

        first_plugin, second_plugin = (serial(), execution) if order == "serial-first" else (execution, serial())
        first = build(first_plugin).run()
        second = build(second_plugin).run()

        for result in (first, second):
            assert_no_errors(result)
        assert cache_hits(first) == {}
        assert cache_hits(second) == all_hits(["baseline", "triple"], 3, "cached_scale")
        assert len(executions("cached_scale")) == 6  # the second run computed nothing
        assert per_replicate(second) == per_replicate(first)
        assert metric_of(second, "scaled") == {("baseline", r): [r + 1.0] for r in range(3)} | {
            ("triple", r): [3.0 * (r + 1)] for r in range(3)
        }
        assert manifest(second) == manifest(first)
        assert {k[:3]: v for k, v in stored_artifacts("inv", 1).items()} == {
            k[:3]: v for k, v in stored_artifacts("inv", 0).items()
        }

    def test_artifact_bytes_match_serial(self, execution: ExecutionPlugin) -> None:
        def build(plugin, name):
            return make(plugin, [add_delta(), seeded_artifacts(), noisy_total()], name=name)

        exp, ref = both(build, execution)
        result, reference = exp.run(), ref.run()

        assert_no_errors(result)
        stored, expected = stored_artifacts("inv"), stored_artifacts("ref")
        assert len(stored) == 2 * 3 * 2  # conditions x replicates x artifacts
        assert stored == expected
        assert manifest(result) == manifest(reference)
        assert per_replicate(result) == per_replicate(reference)
        seeded = {k: v for k, v in stored.items() if k[3] == "seeded.bin"}
        assert len(set(seeded.values())) == len(seeded)

    def test_plugin_hooks_match_serial(self, execution: ExecutionPlugin) -> None:
        def build(plugin, name):
            return make(plugin, [add_delta(), noisy_total()], name=name, plugins=(HookStamp(),))

        exp, ref = both(build, execution)
        result, reference = exp.run(), ref.run()

        assert_no_errors(result)
        assert per_replicate(result) == per_replicate(reference)
        stamps = metric_of(result, "hook_replicate")
        assert stamps[("shift", 2)] == [f"shift:2:{result.provenance['seeds']['shift'][2]}:3"]
        steps = [s.split(":")[:2] for s in metric_of(result, "hook_after_step")[("baseline", 0)]]
        assert steps == [["add_delta", "add_delta"], ["noisy_total", "add_delta/noisy_total"]]

    def test_apply_matches_serial(self, execution: ExecutionPlugin) -> None:
        def build(plugin, name):
            return make(plugin, [add_delta(), noisy_total(), exit_step(total()), must_not_run()], name=name)

        exp, ref = both(build, execution)
        for treatment in (None, SHIFT, "shift"):
            output = exp.apply(treatment=treatment)
            assert isinstance(output, float)
            assert output == ref.apply(treatment=treatment)
        assert exp.apply(seed=99) == ref.apply(seed=99)
        assert exp.apply() != exp.apply(seed=99)
        assert not Path("data").exists()  # apply() stores nothing

    # ============================================================ Part B: the harder corners

    def test_ctx_rng_matches_serial_and_is_common_to_conditions(self, execution: ExecutionPlugin) -> None:
        def build(plugin, name):
            return make(plugin, [add_delta(), rng_draw(), noisy_total()], name=name, replicates=4)

        exp, ref = both(build, execution)
        result, reference = exp.run(), ref.run()

        assert_no_errors(result)
        assert_same(result, reference)
        draws_seen = metric_of(result, "rng")
        assert len({draws_seen[("baseline", r)][0] for r in range(4)}) == 4
        assert all(draws_seen[("shift", r)] == draws_seen[("baseline", r)] for r in range(4))

    def test_initial_ctx_values_are_per_replicate_copies(self, execution: ExecutionPlugin) -> None:
        def build(plugin, name):
            return make(plugin, [append_seen()], name=name, initial_ctx={"seen": []})

        exp, ref = both(build, execution)
        result, reference = exp.run(), ref.run()

        assert_no_errors(result)
        assert metric_of(result, "n") == {(c, r): [1] for c in ("baseline", "shift") for r in range(3)}
        assert per_replicate(result) == per_replicate(reference)
        assert exp.initial_ctx["seen"] == []
        assert ref.initial_ctx["seen"] == []

    def test_cache_covers_context_values_read_in_the_body(self, execution: ExecutionPlugin, cache_mode: str) -> None:
        if cache_mode == "cache-on":
            self.require_driver_filesystem(execution)

        def build(plugin, name):
            return make(
                plugin,
                [cached_ctx_delta()],
                name=name,
                source=zero(),
                treatments=(Treatment("big", {"delta": 100.0}),),
                initial_ctx={"delta": 10.0},
            )

        expected = {("baseline", r): [10.0] for r in range(3)} | {("big", r): [100.0] for r in range(3)}
        exp = build(execution, "inv")
        first, second = exp.run(), exp.run()
        for result in (first, second):
            assert_no_errors(result)
            assert metric_of(result, "out") == expected
        if cache_mode == "cache-on":
            assert cache_hits(second) == all_hits(["baseline", "big"], 3, "cached_ctx_delta")
        assert per_replicate(first) == per_replicate(build(serial(), "ref").run())

    @pytest.mark.parametrize("step", [cached_global_normal, cached_rng_normal], ids=["np.random", "ctx.rng"])
    def test_cache_keeps_random_draws_per_replicate(
        self,
        execution: ExecutionPlugin,
        cache_mode: str,
        monkeypatch: pytest.MonkeyPatch,
        step: Callable[..., PipelineStep],
    ) -> None:
        if cache_mode == "cache-on":
            self.require_driver_filesystem(execution)

        def build(plugin, name):
            return make(plugin, [step()], name=name, source=zero(), treatments=(), replicates=4)

        with monkeypatch.context() as patch:
            patch.setenv(NO_CACHE_ENV, "1")
            uncached = build(serial(), "uncached").run()
        exp = build(execution, "inv")
        first, second = exp.run(), exp.run()

        for result in (uncached, first, second):
            assert_no_errors(result)
        expected = metric_of(uncached, "draw")
        assert len({values[0] for values in expected.values()}) == 4  # the draws differ across replicates
        assert metric_of(first, "draw") == expected
        assert metric_of(second, "draw") == expected
        if cache_mode == "cache-on":
            assert cache_hits(second) == all_hits(["baseline"], 4, step().name)

    def test_cache_sees_edits_of_helper_functions(
        self, execution: ExecutionPlugin, cache_mode: str, user_module: Callable[[str], Any]
    ) -> None:
        module = user_module(HELPER_SOURCE.format(constant="1.0"))

        def run(**kwargs):
            exp = make(execution, [module.uses_helper()], source=ramp(), treatments=())
            return exp.run(**kwargs)

        first = run()
        assert_no_errors(first)
        assert metric_of(first, "helped") == {("baseline", r): [r + 2.0] for r in range(3)}

        module = rewrite(module, HELPER_SOURCE.format(constant="20.0"))
        second = run()
        assert_no_errors(second)
        assert metric_of(second, "helped") == {("baseline", r): [r + 21.0] for r in range(3)}
        assert cache_hits(second) == {}

        module = rewrite(module, HELPER_SOURCE.format(constant="300.0"))
        with pytest.raises(ValidationError, match="uses_helper"):
            run(strategy="resume")

    def test_misspelt_treatment_key_is_rejected(self, execution: ExecutionPlugin) -> None:
        exp = make(execution, [add_delta(), noisy_total()], treatments=(Treatment("typo", {"detla": 10.0}),))
        for attempt in (exp.validate, exp.run):
            with pytest.raises(ValidationError) as caught:
                attempt()
            assert re.search("did you mean", str(caught.value), re.IGNORECASE)
            assert "'delta'" in str(caught.value)

    def test_unread_treatment_key_is_reported(
        self, execution: ExecutionPlugin, caplog: pytest.LogCaptureFixture
    ) -> None:
        spare = Treatment("spare", {"unused_knob": 1})

        def build(plugin, name):
            return make(plugin, [add_delta(), noisy_total()], name=name, treatments=(spare,))

        exp, ref = both(build, execution)
        with caplog.at_level(logging.WARNING, logger="crystallize"):
            result = exp.run()
        reference = ref.run()

        assert_no_errors(result)
        assert_same(result, reference)
        logged = warning_texts(caplog.records, "unused_knob")
        assert logged and any("spare" in text for text in logged)
        assert [w for w in result.warnings if "unused_knob" in w and "spare" in w]
        assert [w for w in result.provenance["warnings"] if "unused_knob" in w]
        record = json.loads(Path("data/inv/v0/run.json").read_text())
        assert [text for text in json_under_warning_keys(record) if "unused_knob" in text]

    @pytest.mark.parametrize(("batch_size", "tried"), [(None, 3), (2, 6)])
    def test_search_depends_on_the_optimizer_not_the_machine(
        self, execution: ExecutionPlugin, batch_size: int | None, tried: int
    ) -> None:
        def search(plugin, name):
            options = {} if batch_size is None else {"batch_size": batch_size}
            opt = RandomSearchOptimizer({"delta": (-2.0, 2.0)}, Objective("total"), seed=0, **options)
            exp = make(plugin, [add_delta(), noisy_total()], name=name, treatments=())
            best = exp.optimize(opt, num_trials=3, replicates_per_trial=2)
            return exp, opt, best

        exp, opt, best = search(execution, "inv")
        ref, ref_opt, ref_best = search(serial(), "ref")

        assert len(opt.history) == tried
        assert len(exp.last_optimization.metrics.treatments) == tried
        assert history(opt) == history(ref_opt)
        assert (best.name, dict(best.apply_map)) == (ref_best.name, dict(ref_best.apply_map))
        assert per_replicate(exp.last_optimization) == per_replicate(ref.last_optimization)

    def test_error_traceback_names_the_users_file(
        self, execution: ExecutionPlugin, user_module: Callable[[str], Any]
    ) -> None:
        module = user_module(FAILING_SOURCE)
        result = make(execution, [module.user_failure()], treatments=()).run()

        assert set(result.errors) == {"baseline_rep_1"} and set(result.replicate_errors["baseline"]) == {1}
        error = result.replicate_errors["baseline"][1]
        assert error.exception_type == "ValueError"
        assert module.__file__ in error.traceback
        assert 'raise ValueError("user module refuses replicate one")' in error.traceback
        assert "<dynamic-code>" not in error.traceback
        assert metric_of(result, "ok") == {("baseline", 0): [1], ("baseline", 2): [1]}
