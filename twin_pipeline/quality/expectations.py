"""Great Expectations 1.x suite builders and a privacy-safe validator (no Dagster here).

Suites are plain code: :func:`table_suite` turns a small declarative description of a table
contract (columns, key, not-null columns, numeric ranges, value sets, PHI-absence regexes, minimum
row count) into a ``gx.ExpectationSuite``. :func:`validate_frame` runs a suite on one pandas
DataFrame in a process-wide cached ephemeral GX context and returns a :class:`GateResult` that
holds aggregates only: counts and failed expectation *names* (expectation type + column names),
never unexpected values, row indices or GX exception messages. This is patient data.

Great Expectations is imported lazily (importing it costs ~5 s), so importing this module, and
defining suites-as-callables in Dagster definitions, stays cheap until the first suite is built.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import great_expectations as gx
    import pandas as pd

__all__ = [
    "GateResult",
    "PHI_PATTERNS",
    "expectation_name",
    "get_gx_context",
    "table_suite",
    "validate_frame",
]

#: Regexes (Python ``re`` syntax, searched anywhere in the value) for direct identifiers that must
#: never appear in a de-identified table. Used with ``regex_absent``.
PHI_PATTERNS: dict[str, str] = {
    "ssn": r"\b\d{3}-\d{2}-\d{4}\b",
    "phone": r"(?:\(\d{3}\)\s?|\b\d{3}[-. ])\d{3}[-. ]\d{4}\b",
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
}

# Names of the single datasource / asset / batch definition reused for every validation.
_DATASOURCE = "twin_pipeline_frames"
_ASSET = "frame"
_BATCH_DEFINITION = "whole_frame"
# Aggregates only: counts/percentages, and no partial unexpected values are ever computed.
_RESULT_FORMAT: dict[str, Any] = {"result_format": "BASIC", "partial_unexpected_count": 0}

_lock = threading.RLock()
_cache: dict[int, Any] = {}  # pid -> whole-dataframe BatchDefinition of the cached context


def _import_gx():
    """Import GX with analytics off (must be set before the first import)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx  # noqa: PLC0415 - deliberate lazy import (slow)

    return gx


def get_gx_context():
    """Return this process's cached ephemeral GX context (created on first use).

    The context has progress bars disabled and holds one pandas datasource with one dataframe
    asset and one whole-dataframe batch definition, reused by every :func:`validate_frame` call.
    Keyed by process id so a forked worker builds its own.
    """
    return _batch_definition().data_asset.datasource.data_context


def _batch_definition():
    pid = os.getpid()
    with _lock:
        bd = _cache.get(pid)
        if bd is None:
            gx = _import_gx()
            from great_expectations.data_context.types.base import (  # noqa: PLC0415
                ProgressBarsConfig,
            )

            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(
                globally=False, metric_calculations=False
            )
            asset = context.data_sources.add_pandas(_DATASOURCE).add_dataframe_asset(_ASSET)
            bd = asset.add_batch_definition_whole_dataframe(_BATCH_DEFINITION)
            _cache.clear()
            _cache[pid] = bd
        return bd


def table_suite(
    name: str,
    *,
    columns: list[str],
    unique: list[str] | None = None,
    not_null: list[str] | None = None,
    ranges: dict[str, tuple] | None = None,
    value_sets: dict[str, list] | None = None,
    regex_absent: dict[str, str] | None = None,
    min_rows: int = 1,
    extra: list | None = None,
) -> gx.ExpectationSuite:
    """Build an expectation suite for one table contract.

    Args:
        name: suite name (shown in check metadata), e.g. ``"deid.patients"``.
        columns: columns that must exist; extra columns are allowed
            (``expect_table_columns_to_match_set(exact_match=False)`` plus one
            ``expect_column_to_exist`` per column, so a missing column is named).
        unique: the table key. One column -> ``expect_column_values_to_be_unique``; several ->
            ``expect_compound_columns_to_be_unique`` on the combination.
        not_null: columns with ``expect_column_values_to_not_be_null``.
        ranges: ``{column: (lo, hi)}`` or ``{column: (lo, hi, mostly)}``; either bound may be
            ``None`` (open); bounds inclusive, in the column's own unit; ``mostly`` defaults to 1.0.
        value_sets: ``{column: allowed values}`` -> ``expect_column_values_to_be_in_set``
            (nulls are not checked here; use ``not_null``).
        regex_absent: ``{column: regex}`` -> ``expect_column_values_to_not_match_regex``; used for
            PHI absence (see :data:`PHI_PATTERNS`; combine patterns with ``|``).
        min_rows: minimum row count (``expect_table_row_count_to_be_between``); 0 disables it.
        extra: further GX ``Expectation`` objects appended as they are.

    Returns:
        A new ``gx.ExpectationSuite`` (not registered in any context).
    """
    gx = _import_gx()
    gxe = gx.expectations
    get_gx_context()  # GX 1.x needs an active context before expectations can be added
    if not columns:
        raise ValueError(f"suite {name!r}: columns must name at least one column")
    suite = gx.ExpectationSuite(name=name)
    add = suite.add_expectation

    add(gxe.ExpectTableColumnsToMatchSet(column_set=list(columns), exact_match=False))
    for column in columns:
        add(gxe.ExpectColumnToExist(column=column))
    if min_rows:
        add(gxe.ExpectTableRowCountToBeBetween(min_value=int(min_rows), max_value=None))
    if unique:
        if len(unique) == 1:
            add(gxe.ExpectColumnValuesToBeUnique(column=unique[0]))
        else:
            add(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(unique)))
    for column in not_null or []:
        add(gxe.ExpectColumnValuesToNotBeNull(column=column))
    for column, bounds in (ranges or {}).items():
        if len(bounds) == 2:
            lo, hi, mostly = bounds[0], bounds[1], 1.0
        elif len(bounds) == 3:
            lo, hi, mostly = bounds
        else:
            raise ValueError(f"suite {name!r}: range for {column!r} must be (lo, hi[, mostly])")
        if lo is None and hi is None:
            raise ValueError(f"suite {name!r}: range for {column!r} has no bound")
        if not 0.0 < float(mostly) <= 1.0:
            raise ValueError(f"suite {name!r}: mostly for {column!r} must be in (0, 1]")
        add(
            gxe.ExpectColumnValuesToBeBetween(
                column=column,
                min_value=None if lo is None else float(lo),
                max_value=None if hi is None else float(hi),
                mostly=float(mostly),
            )
        )
    for column, allowed in (value_sets or {}).items():
        add(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(allowed)))
    for column, regex in (regex_absent or {}).items():
        add(gxe.ExpectColumnValuesToNotMatchRegex(column=column, regex=regex))
    for expectation in extra or []:
        add(expectation)
    return suite


@dataclass(frozen=True)
class GateResult:
    """Outcome of one suite on one frame: aggregates only, safe for logs and Dagster metadata.

    ``failed_expectations`` are names like ``"expect_column_values_to_be_between(age_years)"``;
    ``unexpected_counts`` maps such a name to its count of offending rows (column-map
    expectations only); ``errored`` counts expectations that raised (e.g. a missing column),
    which are also counted as failed.
    """

    success: bool
    evaluated: int
    failed: int
    failed_expectations: list[str]
    suite_name: str
    row_count: int = 0
    errored: int = 0
    unexpected_counts: dict[str, int] = field(default_factory=dict)


def expectation_name(expectation_type: str, kwargs: dict[str, Any]) -> str:
    """Name an expectation by its type and the column names it targets (no other arguments).

    ``("expect_column_values_to_be_between", {"column": "age", "min_value": 0})`` ->
    ``"expect_column_values_to_be_between(age)"``; table-level expectations get no parentheses.
    """
    cols: list[str] = []
    if kwargs.get("column") is not None:
        cols.append(str(kwargs["column"]))
    for key in ("column_A", "column_B"):
        if kwargs.get(key) is not None:
            cols.append(str(kwargs[key]))
    if kwargs.get("column_list"):
        cols.extend(str(c) for c in kwargs["column_list"])
    return f"{expectation_type}({','.join(cols)})" if cols else expectation_type


def validate_frame(df: pd.DataFrame, suite: gx.ExpectationSuite) -> GateResult:
    """Validate one DataFrame against a suite in the cached ephemeral GX context.

    Uses the pandas datasource -> dataframe asset -> whole-dataframe batch definition, then
    ``batch.validate(suite)`` with a BASIC result format and zero partial unexpected values, so
    no row value is ever computed into the result. Only counts and expectation names are kept.

    Args:
        df: the table as delivered by the asset (one row per the table's grain).
        suite: the expectation suite (e.g. from :func:`table_suite`).

    Returns:
        A :class:`GateResult`; ``success`` is False if any expectation failed or raised.
    """
    bd = _batch_definition()
    with _lock:
        batch = bd.get_batch(batch_parameters={"dataframe": df})
        result = batch.validate(suite, result_format=_RESULT_FORMAT)
        # Drop the execution engine's reference to the frame (it would otherwise live on
        # until the next validation in this process).
        del batch
        engine = bd.data_asset.datasource.execution_engine
        manager = getattr(engine, "batch_manager", None)
        if manager is not None:
            manager.reset_batch_cache()
            manager.batch_data_cache.clear()

    failed: list[str] = []
    unexpected: dict[str, int] = {}
    errored = 0
    for res in result.results:
        if res.success:
            continue
        config = res.expectation_config
        name = expectation_name(config.type, dict(config.kwargs))
        failed.append(name)
        info = res.exception_info or {}
        raised = bool(info.get("raised_exception")) or any(
            isinstance(v, dict) and v.get("raised_exception") for v in info.values()
        )
        errored += int(raised)
        count = (res.result or {}).get("unexpected_count")
        if isinstance(count, (int, float)) and not raised:
            unexpected[name] = int(count)
    stats = result.statistics
    return GateResult(
        success=bool(result.success),
        evaluated=int(stats["evaluated_expectations"]),
        failed=len(failed),
        failed_expectations=failed,
        suite_name=suite.name,
        row_count=len(df),
        errored=errored,
        unexpected_counts=unexpected,
    )
