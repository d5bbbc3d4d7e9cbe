"""Reading ``config.yaml``: the parsed data, the line of every key, and errors that say where.

Kept apart from what the keys mean, so that every part of the loader reports a problem
the same way: ``file, line N: steps[1].params: expected ..., got ...``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import ValidationError
from ..paths import check_segment

__all__ = ["REQUIRED_HINTS", "YamlSource", "child_path", "describe", "did_you_mean"]

REQUIRED_HINTS = {
    "datasource": "; expected the name of a @data_source function (datasource: fetch_numbers)",
    "steps": "; expected a list of @pipeline_step names (steps: [add_delta, summarize])",
    "name": "; expected a name",
    "verifier": "; expected the name of a @verifier function",
    "experiment": "; expected the name of the experiment that writes the artifact",
}


class YamlSource:
    """The parsed YAML, where each key path sits in the file, and error messages that say so."""

    def __init__(self, file: Path, data: dict[str, Any], lines: dict[str, int]) -> None:
        self.file = file
        self.data = data
        self.lines = lines
        self.artifact_producer: str | None = None  # set when the datasource reads another experiment's artifact

    @classmethod
    def read(cls, file: Path) -> YamlSource:
        """The mapping at the top of ``file``, with its line map; any problem is a ValidationError."""
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"{file}: cannot read it: {exc}") from exc
        data, lines = _parse(file, text)
        if data is None:
            raise ValidationError(
                f"{file}: the file is empty; expected a mapping with at least 'datasource' and 'steps'"
            )
        if not isinstance(data, dict):
            raise ValidationError(
                f"{file}: expected a mapping of keys (datasource, steps, ...) at the top, got {describe(data)}"
            )
        return cls(file, data, lines)

    # -- errors

    def line(self, path: str) -> int | None:
        """The line of ``path``, else of its nearest parent the file shows."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = _parent(path)
        return None

    def error(self, path: str, message: str) -> ValidationError:
        line = self.line(path)
        where = f"{self.file}, line {line}" if line is not None else str(self.file)
        return ValidationError(f"{where}: {path}: {message}" if path else f"{where}: {message}")

    def expected(self, path: str, what: str, got: Any) -> ValidationError:
        return self.error(path, f"expected {what}, got {describe(got)}")

    # -- checks

    def check_keys(
        self, mapping: Mapping[Any, Any], path: str, allowed: Sequence[str], required: Sequence[str] = ()
    ) -> None:
        for key in mapping:
            if key not in allowed:
                raise self.error(
                    child_path(path, str(key)),
                    f"unknown key '{key}'{did_you_mean(str(key), allowed)}; expected one of: {', '.join(allowed)}",
                )
        for key in required:
            if key not in mapping:
                raise self.error(child_path(path, key), f"required key missing{REQUIRED_HINTS.get(key, '')}")

    def check_mapping(self, value: Any, path: str, what: str) -> None:
        if not isinstance(value, dict):
            raise self.expected(path, what, value)
        for key in value:
            if not isinstance(key, str):
                raise self.error(path, f"expected string keys, got {describe(key)}")

    def check_name(self, value: Any, path: str, what: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.expected(path, what, value)
        return value

    def check_segment(self, value: Any, path: str, what: str) -> str:
        """``value`` if the store can use it as a folder name (the rule of :mod:`crystallize.paths`)."""
        if not isinstance(value, str) or not value:
            raise self.expected(path, f"a non-empty {what}", value)
        try:
            return check_segment(value, what)
        except ValidationError as exc:
            raise self.error(
                path,
                f"{what} {value!r} cannot be used as a folder name; expected a name without '/', '\\', "
                "control characters, surrounding spaces, or '.'/'..'",
            ) from exc


def _parse(file: Path, text: str) -> tuple[Any, dict[str, int]]:
    """The document of ``text`` and its line map; YAML errors name the line and column."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines = _line_map(file, node)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(file)
        context = exc.context
        if context and exc.context_mark is not None and exc.context_mark is not mark:
            context = f"{context} (line {exc.context_mark.line + 1})"
        problem = " ".join(part for part in (context, exc.problem) if part)
        raise ValidationError(f"{where}: invalid YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise ValidationError(f"{file}: invalid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return data, lines


def _line_map(file: Path, root: yaml.Node | None) -> dict[str, int]:
    """``{"steps[1].params": line}`` for every key and list item (1-based lines); rejects duplicate keys."""
    lines: dict[str, int] = {}
    active: set[int] = set()

    def walk(node: yaml.Node, path: str) -> None:
        if id(node) in active:  # a recursive alias
            return
        active.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                line = key_node.start_mark.line + 1
                child = child_path(path, str(key))
                if key is not None and key != "<<":
                    if key in seen:
                        raise ValidationError(
                            f"{file}, line {line}: {child}: duplicate key '{key}' (first on line {seen[key]}); "
                            "expected each key once"
                        )
                    seen[key] = line
                lines.setdefault(child, line)
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = f"{path}[{index}]"
                lines.setdefault(child, item.start_mark.line + 1)
                walk(item, child)
        active.discard(id(node))

    if root is not None:
        walk(root, "")
    return lines


def child_path(path: str, key: str) -> str:
    """The key path of ``key`` under ``path`` (``steps[1]`` + ``params``)."""
    return f"{path}.{key}" if path else key


def _parent(path: str) -> str:
    if path.endswith("]"):
        return path[: path.rindex("[")]
    return path.rpartition(".")[0]


def describe(value: Any) -> str:
    """A value as an error message shows what it got."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (str, bool, int, float)):
        return f"{value!r} ({type(value).__name__})"
    return type(value).__name__


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, else nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
