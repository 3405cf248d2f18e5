"""Glue shared by every layer: gate check specs/results and aggregate-only output metadata."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import dagster as dg
import pandas as pd

from twin_pipeline.quality.gx import gate_check_result, gate_check_spec
from twin_pipeline.resources import LandingResource
from twin_pipeline.sources.encrypted_delivery import DeliveryIntegrityError
from twin_pipeline.sources.landing import READY_MARKER


def delivery_status(landing: LandingResource, site_id: str, delivery_id: str) -> bool:
    """True if the delivery is complete; False if it does not exist (an empty partition of the
    site × delivery grid). A folder without `_READY` is half-copied: that is an error, not data."""
    d = landing.raw_delivery_dir(site_id, delivery_id)
    if not d.exists():
        return False
    if not (d / READY_MARKER).exists():
        raise dg.Failure(
            f"delivery {site_id}/{delivery_id} has no {READY_MARKER} marker: it is still being copied "
            "and is never read half-complete. Re-run once the site writes the marker."
        )
    try:
        landing.delivery_dir(site_id, delivery_id)  # decrypts + verifies an encrypted delivery up front
    except DeliveryIntegrityError as exc:
        raise dg.Failure(description=str(exc)) from None
    return True


def gated_outputs(asset_key: list[str], suite_fn: Callable, partitions_def=None) -> list[dg.AssetCheckSpec]:
    """The blocking Great Expectations gate declared for one asset (recorded per partition when
    the asset is partitioned)."""
    name = suite_fn.suite_name
    return [
        gate_check_spec(
            dg.AssetKey(asset_key),
            name,
            blocking=True,
            description=f"Great Expectations suite `{name}` (blocking): schema, keys, ranges, PHI absence.",
            partitions_def=partitions_def,
        )
    ]


def gate_then_output(
    asset_key: list[str],
    df: pd.DataFrame,
    suite_fn: Callable,
    *,
    output_name: str,
    metadata: dict,
    delivery_present: bool = True,
) -> Iterator[dg.AssetCheckResult | dg.Output]:
    """For the privacy boundary: evaluate the gate first and store the frame only if it passed.

    A failing `deid` frame never reaches the warehouse; the step fails naming the asset and the
    failed expectations (aggregates only), and everything downstream is not executed.
    """
    key = dg.AssetKey(asset_key)
    results = list(gate_results(asset_key, df, suite_fn, delivery_present=delivery_present))
    yield from results
    failed = [r for r in results if not r.passed]
    if failed:
        names = failed[0].metadata.get("failed_expectation_names")
        raise dg.Failure(
            description=f"blocking gate {failed[0].check_name} failed for {key.to_user_string()}; "
            f"output not stored. Failed expectations: {getattr(names, 'value', names)}",
        )
    yield dg.Output(df, output_name=output_name, metadata=metadata)


def gate_results(
    asset_key: list[str], df: pd.DataFrame, suite_fn: Callable, *, delivery_present: bool = True
) -> Iterator[dg.AssetCheckResult]:
    key = dg.AssetKey(asset_key)
    if not delivery_present:
        yield dg.AssetCheckResult(
            asset_key=key,
            check_name=_check_name(suite_fn.suite_name),
            passed=True,
            metadata={"skipped": "no delivery for this site × delivery partition", "row_count": 0},
        )
        return
    yield gate_check_result(key, df, suite_fn())


def _check_name(suite_name: str) -> str:
    from twin_pipeline.quality.gx import gate_check_name

    return gate_check_name(suite_name)


def output_metadata(
    df: pd.DataFrame, *, received: int | None = None, quarantined: int | None = None, delivery_present: bool = True
) -> dict:
    """Aggregates only: row/patient counts, received/loaded/quarantined, null rates. Never row values."""
    meta: dict = {"dagster/row_count": len(df), "delivery_present": delivery_present}
    if "person_id" in df.columns:
        meta["patients"] = int(df["person_id"].nunique())
    if received is not None:
        meta["received"] = int(received)
        meta["loaded"] = int(len(df))
        meta["quarantined"] = int(quarantined or 0)
        meta["accounted"] = bool(received == len(df) + (quarantined or 0))
    if len(df.columns) and len(df):
        nulls = df.isna().mean()
        nulls = nulls[nulls > 0].round(4)
        meta["null_rates"] = dg.MetadataValue.json({k: float(v) for k, v in nulls.items()})
    return meta
