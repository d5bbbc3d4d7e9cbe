"""``Result.print_tree()``: what each replicate did, as a tree a person reads in a terminal.

The tree is made from what a ``Result`` holds (live or reopened by ``load_run``): per condition
and replicate the steps that ran, their cache hits, the artifacts they stored, the metrics the
replicate recorded and the error that stopped it. Printing is what the caller asked for here,
so this module writes to the stream it is given (standard output by default) through rich.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from .errors import ValidationError

if TYPE_CHECKING:
    from .results import Result

LEVELS = ("treatment", "replicate", "step")
_LEVEL_STYLES = ("bold yellow", "green", "cyan")
_STEP_STYLE = "cyan"


@dataclass
class _Row:
    """One step of one replicate (``step`` None: the replicate itself) and what to show under it."""

    treatment: str
    replicate: int
    step: str | None
    actions: list[tuple[str, str, list[str]]] = field(default_factory=list)


@dataclass
class _Node:
    label: str
    style: str | None = None
    children: list[_Node] = field(default_factory=list)

    def add(self, label: str, style: str | None = None) -> _Node:
        child = _Node(label, style)
        self.children.append(child)
        return child


def parse_format(fmt: str) -> list[str]:
    """The levels of ``fmt`` ("treatment > replicate > step", "action" allowed last), checked."""
    tokens = [token.strip().lower() for token in fmt.split(">")]
    unknown = [token for token in tokens if token not in (*LEVELS, "action")]
    if unknown:
        raise ValidationError(
            f"Invalid format spec: {fmt!r} (unknown level(s) {unknown}); "
            "use treatment, replicate and step, separated by '>', optionally ending with action"
        )
    if "action" in tokens[:-1]:
        raise ValidationError(f"Invalid format spec: {fmt!r}; 'action' must be the final element if present")
    return [token for token in tokens if token != "action"]


def print_tree(result: Result, fmt: str, *, file: IO[str] | None = None) -> None:
    from rich.console import Console

    levels = parse_format(fmt)
    Console(file=file).print(_to_rich(build_tree(result, levels)))


def build_tree(result: Result, levels: list[str]) -> _Node:
    root = _Node("Experiment Summary", "bold")
    _build(root, list(_rows(result)), levels, 0)
    return root


def _rows(result: Result) -> Iterable[_Row]:
    provenance = result.provenance
    step_order: dict[str, Any] = provenance.get("steps") or {}
    hits = {
        condition: {(int(replicate), str(step)) for replicate, step in pairs}
        for condition, pairs in (provenance.get("cache_hits") or {}).items()
    }
    stored: dict[tuple[str, int, str], list[str]] = {}
    for condition, entries in result.artifact_entries.items():
        for position, entry in enumerate(entries):
            if entry.path is not None:
                replicate = artifact_replicate(entry.path, position)
                stored.setdefault((condition, replicate, entry.step), []).append(entry.name)
    metrics = dict(result.metrics.conditions())
    conditions = list(metrics) + [c for c in result.replicate_errors if c not in metrics]
    for condition in conditions:
        errors = result.replicate_errors.get(condition, {})
        tm = metrics.get(condition)
        per_replicate: dict[int, list[str]] = {}
        if tm is not None:
            for name in tm.metrics:
                for replicate, values in tm.by_replicate(name).items():
                    shown = values[0] if len(values) == 1 else values
                    per_replicate.setdefault(replicate, []).append(f"{name}: {shown!r}")
        replicates = set(per_replicate) | set(errors) | {r for (c, r, _) in stored if c == condition}
        steps = list(step_order.get(condition, {}))
        for replicate in sorted(replicates):
            error = errors.get(replicate)
            ran = steps
            if error is not None:
                ran = steps[: steps.index(error.stage) + 1] if error.stage in steps else []
            for step in ran:
                row = _Row(condition, replicate, step)
                if (replicate, step) in hits.get(condition, set()):
                    row.actions.append(("Cache hit", "magenta", []))
                names = stored.get((condition, replicate, step))
                if names:
                    row.actions.append(("Artifacts", "blue", names))
                if error is not None and error.stage == step:
                    row.actions.append(("Error", "bold red", [f"{error.exception_type}: {error.message}"]))
                yield row
            own = _Row(condition, replicate, None)
            if per_replicate.get(replicate):
                own.actions.append(("Write Metrics", "red", per_replicate[replicate]))
            if error is not None and error.stage not in ran:
                own.actions.append(("Error", "bold red", [f"{error.stage}: {error.exception_type}: {error.message}"]))
            if own.actions:
                yield own


def _build(node: _Node, rows: list[_Row], levels: list[str], level: int) -> None:
    if level == len(levels):
        for row in rows:
            target = node
            if row.step is not None and "step" not in levels:
                target = node.add(f"Step {row.step}", _STEP_STYLE)
            # Without a replicate level, say whose actions these are.
            suffix = "" if "replicate" in levels else f" (replicate {row.replicate})"
            _add_actions(target, row.actions, suffix)
        return
    token = levels[level]
    groups: dict[Any, list[_Row]] = {}
    loose: list[_Row] = []  # rows of the replicate itself, at the step level
    for row in rows:
        key = getattr(row, token)
        if key is None:
            loose.append(row)
        else:
            groups.setdefault(key, []).append(row)
    keys = sorted(groups) if token == "replicate" else list(groups)
    for key in keys:
        child = node.add(_label(token, key), _LEVEL_STYLES[min(level, len(_LEVEL_STYLES) - 1)])
        _build(child, groups[key], levels, level + 1)
    if loose:
        _build(node, loose, levels, level + 1)


def _label(token: str, key: Any) -> str:
    if token == "treatment":
        return f"Treatment '{key}'"
    if token == "replicate":
        return f"Replicate {key}"
    return f"Step {key}"


def _add_actions(node: _Node, actions: list[tuple[str, str, list[str]]], suffix: str = "") -> None:
    for label, style, lines in actions:
        child = node.add(label + suffix, style)
        for line in lines:
            child.add(line)


_REPLICATE_DIR = re.compile(r"replicate_(\d+)$")


def artifact_replicate(path: str, position: int) -> int:
    """The replicate a stored artifact's path names (``.../replicate_<i>/<condition>/<step>/<name>``);
    ``position`` when the path does not say."""
    parts = path.replace("\\", "/").rstrip("/").split("/")
    match = _REPLICATE_DIR.match(parts[-4]) if len(parts) >= 4 else None
    return int(match.group(1)) if match else position


def _to_rich(node: _Node) -> Any:
    from rich.text import Text
    from rich.tree import Tree

    tree = Tree(Text(node.label, style=node.style or ""))
    stack = [(node, tree)]
    while stack:
        current, rendered = stack.pop()
        for child in current.children:
            branch = rendered.add(Text(child.label, style=child.style or ""))
            stack.append((child, branch))
    return tree
