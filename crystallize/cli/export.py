"""``crystallize export``: a run's metrics in long form (condition, replicate, metric, value)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import ValidationError
from ..results import Result

FORMATS = ("parquet", "csv")


def default_output(result: Result, fmt: str) -> str:
    provenance = result.provenance
    return f"{provenance.get('experiment', 'run')}_v{provenance.get('version', 0)}_metrics.{fmt}"


def export_run(result: Result, fmt: str, output: str) -> tuple[str, int]:
    """Write the metrics to ``output`` (``-``: standard output); returns (where, rows)."""
    table = result.to_arrow()
    if output == "-":
        _write(table, fmt, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return "standard output", table.num_rows
    target = Path(output)
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    with open(temporary, "wb") as handle:
        _write(table, fmt, handle)
    temporary.replace(target)
    return str(target), table.num_rows


def _write(table: Any, fmt: str, sink: Any) -> None:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, sink)
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, sink)
    else:
        raise ValidationError(f"unknown format {fmt!r}; use one of {FORMATS}")
