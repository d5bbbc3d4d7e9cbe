"""Building the hypotheses of a config: a verifier with its parameters, the metrics, a ranker.

Separate from the other sections because a verifier's parameters are bound here and
checked against its signature, so a wrong one is reported at load time, not mid-run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..decorators import VerifierCallable
from ..hypothesis import Hypothesis, MetricSpec
from ..stats.adjust import METHODS
from .build import params_of
from .namespace import HYPOTHESIS, RANKER, VERIFIER, Namespace, is_verifier_factory
from .yaml_source import YamlSource, child_path

__all__ = ["build_hypotheses"]


def build_hypotheses(config: YamlSource, namespace: Namespace, value: Any) -> list[Hypothesis]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise config.expected("hypotheses", "a list of {name: ..., verifier: ..., metrics: ...}", value)
    hypotheses: list[Hypothesis] = []
    seen: set[str] = set()
    for index, entry in enumerate(value):
        path = f"hypotheses[{index}]"
        if isinstance(entry, str):
            hyp = namespace.lookup(entry, path, HYPOTHESIS)
        elif isinstance(entry, dict):
            config.check_keys(entry, path, ("name", "verifier", "metrics", "ranker", "adjust"), ("name", "verifier"))
            name = config.check_name(entry["name"], f"{path}.name", "a hypothesis name")
            hyp = Hypothesis(
                verifier=_build_verifier(config, namespace, entry["verifier"], f"{path}.verifier"),
                metrics=_check_metrics(config, entry.get("metrics"), f"{path}.metrics"),
                ranker=_build_ranker(config, namespace, entry.get("ranker"), f"{path}.ranker"),
                name=name,
                adjust=_check_adjust(config, entry.get("adjust", "holm"), f"{path}.adjust"),
            )
        else:
            raise config.expected(path, "{name: ..., verifier: ..., metrics: ...} or the name of a @hypothesis", entry)
        if hyp.name in seen:
            raise config.error(path, f"a second hypothesis named '{hyp.name}'; expected unique names")
        seen.add(hyp.name)
        hypotheses.append(hyp)
    return hypotheses


def _build_verifier(config: YamlSource, namespace: Namespace, value: Any, path: str) -> Callable[..., Any]:
    if isinstance(value, dict):
        config.check_keys(value, path, ("name", "params"), ("name",))
        ref, ref_path, params = value["name"], child_path(path, "name"), params_of(config, value, path)
    else:
        ref, ref_path, params = value, path, {}
    obj = namespace.lookup(ref, ref_path, VERIFIER)
    if isinstance(obj, VerifierCallable):
        if params:
            raise config.error(
                child_path(path, "params"), f"'{ref}' already has its parameters bound; expected no params"
            )
        return obj
    # A @verifier factory wraps the function it was given: bind the parameters to that function directly.
    fn = obj.verifier_function if is_verifier_factory(obj) else obj
    try:
        inspect.signature(fn).bind({}, {}, **params)
    except TypeError as exc:
        raise config.error(
            child_path(path, "params") if params else path,
            f"'{ref}' cannot be called as {ref}(baseline, treatment{''.join(f', {k}=...' for k in params)}): {exc}",
        ) from exc
    except ValueError:  # no signature (a builtin): let the call decide
        pass
    return VerifierCallable(fn, params)


def _build_ranker(config: YamlSource, namespace: Namespace, value: Any, path: str) -> Callable[[Any], float] | None:
    if value is None:
        return None
    ranker = namespace.lookup(value, path, RANKER)
    try:
        inspect.signature(ranker).bind({})
    except TypeError as exc:
        raise config.error(path, f"'{value}' cannot be called with the verifier's result: {exc}") from exc
    except ValueError:
        pass
    return ranker


def _check_metrics(config: YamlSource, value: Any, path: str) -> MetricSpec:
    """The metrics as the hypothesis takes them: a name, a list of names, or a list of lists."""
    if value is None or isinstance(value, str):
        return value
    expected = "a metric name, a list of names, or a list of lists of names"
    if not isinstance(value, list) or not value:
        raise config.expected(path, expected, value)
    if all(isinstance(item, str) for item in value):
        return list(value)
    if all(isinstance(item, list) and item and all(isinstance(m, str) for m in item) for item in value):
        return [list(item) for item in value]
    raise config.error(path, f"expected {expected}; got a list mixing names and lists (or with empty lists)")


def _check_adjust(config: YamlSource, value: Any, path: str) -> str:
    """The multiple-comparison adjustment: holm (the default), bh or none."""
    if value is None or value is False:
        return "none"
    if not isinstance(value, str) or value.lower() not in METHODS:
        raise config.expected(path, f"one of {', '.join(METHODS)}", value)
    return value.lower()
