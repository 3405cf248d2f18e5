"""Landing sensor (new `_READY` delivery → partitions added + run requested), twin refresh after
deliveries land, a run-failure sensor, and the nightly refresh schedule."""


import json

import dagster as dg

from twin_pipeline.defs.jobs import (
    federated_effects_job,
    federated_pool_job,
    federated_site_job,
    site_delivery_job,
    twin_refresh_job,
)
from twin_pipeline.defs.partitions import delivery_partitions, partition_key_for, site_partitions
from twin_pipeline.resources import LandingResource


# A delivery whose partition of this asset is already materialized has landed (e.g. through `make demo` or
# `twin-pipeline backfill`, which the sensor's cursor does not see): the sensor does not request it again.
LANDED_MARKER = dg.AssetKey(["deid", "person"])


def plan_new_deliveries(landing: LandingResource, seen: set[str], known_sites: set[str], known_deliveries: set[str],
                        landed: set[str] | frozenset[str] = frozenset()):
    """What the sensor does, as a plain function: partitions to add and runs to request.

    `seen` holds "site/delivery" keys already requested by this sensor; `landed` holds partition keys
    (str of the site × delivery MultiPartitionKey) already materialized by any run. Both are skipped."""
    new_sites: list[str] = []
    new_deliveries: list[str] = []
    runs: list[tuple[str, str]] = []
    for d in landing.ready_deliveries():
        key = f"{d.site_id}/{d.delivery_id}"
        if key in seen or str(partition_key_for(d.site_id, d.delivery_id)) in landed:
            continue
        if d.site_id not in known_sites and d.site_id not in new_sites:
            new_sites.append(d.site_id)
        if d.delivery_id not in known_deliveries and d.delivery_id not in new_deliveries:
            new_deliveries.append(d.delivery_id)
        runs.append((d.site_id, d.delivery_id))
    return new_sites, new_deliveries, runs


@dg.sensor(
    job=site_delivery_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches data/landing/<site>/<delivery>/_READY; adds new sites/deliveries as partitions and "
    "requests one run per new delivery.",
)
def landing_delivery_sensor(context: dg.SensorEvaluationContext, landing: LandingResource):
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    known_sites = set(context.instance.get_dynamic_partitions(site_partitions.name))
    known_deliveries = set(context.instance.get_dynamic_partitions(delivery_partitions.name))
    landed = context.instance.get_materialized_partitions(LANDED_MARKER) if known_deliveries else set()
    new_sites, new_deliveries, runs = plan_new_deliveries(landing, seen, known_sites, known_deliveries, landed)
    if not runs:
        return dg.SkipReason("no new complete deliveries (every _READY delivery was requested or has landed)")
    requests = []
    if new_sites:
        requests.append(site_partitions.build_add_request(new_sites))
    if new_deliveries:
        requests.append(delivery_partitions.build_add_request(new_deliveries))
    seen.update(f"{s}/{d}" for s, d in runs)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=partition_key_for(s, d),
                run_key=f"{s}/{d}",
                tags={"twin_pipeline/site": s, "twin_pipeline/delivery": d},
            )
            for s, d in runs
        ],
        dynamic_partitions_requests=requests,
        cursor=json.dumps(sorted(seen)),
    )


_NOT_YET_RUNNING = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING)


def _has_runs(context: dg.RunStatusSensorContext, job_name: str, statuses) -> bool:
    """True when the instance holds a run of `job_name` in one of `statuses`."""
    return bool(context.instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=list(statuses)), limit=1))


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[site_delivery_job],
    request_job=federated_site_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a site delivery lands successfully, rebuild that site's shareable (obfuscated) files.",
)
def federated_after_delivery(context: dg.RunStatusSensorContext):
    site = context.dagster_run.tags.get("dagster/partition/site")
    if not site:
        return dg.SkipReason("run has no site partition tag")
    return dg.RunRequest(run_key=f"federated-after-{context.dagster_run.run_id}", partition_key=site)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[federated_site_job],
    request_job=twin_refresh_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a site's files are rebuilt (a delivery landed), rebuild twins, models and pooled aggregates.",
)
def twin_refresh_after_delivery(context: dg.RunStatusSensorContext):
    # one queued refresh will see this delivery too: do not pile up refreshes
    if _has_runs(context, twin_refresh_job.name, _NOT_YET_RUNNING):
        return dg.SkipReason(f"a {twin_refresh_job.name} run is already queued")
    return dg.RunRequest(run_key=f"after-{context.dagster_run.run_id}")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[twin_refresh_job],
    request_job=federated_effects_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After twins are rebuilt, every site re-fits its local effect model and re-shares its subgroup "
    "estimates (one federated_effects_job run per site).",
)
def federated_effects_after_refresh(context: dg.RunStatusSensorContext):
    sites = sorted(context.instance.get_dynamic_partitions(site_partitions.name))
    if not sites:
        return dg.SkipReason("no sites yet")
    run_id = context.dagster_run.run_id
    return [dg.RunRequest(run_key=f"effects-{s}-after-{run_id}", partition_key=s,
                          tags={"twin_pipeline/site": s, "twin_pipeline/after_refresh": run_id}) for s in sites]


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[federated_effects_job],
    request_job=federated_pool_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Coordinator: once no site's effect run is still pending, pool the shared estimates "
    "(fixed + random effects, heterogeneity).",
)
def federated_pool_after_effects(context: dg.RunStatusSensorContext):
    # the last site's run to finish triggers the pooling
    if _has_runs(context, federated_effects_job.name, (*_NOT_YET_RUNNING, dg.DagsterRunStatus.STARTED)):
        return dg.SkipReason(f"a {federated_effects_job.name} run is still pending")
    return dg.RunRequest(run_key=f"pool-after-{context.dagster_run.run_id}")


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Logs a PHI-free summary of every failed run (job, partition, failing step).",
)
def run_failure_report(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    steps = [e.step_key for e in context.get_step_failure_events()]
    context.log.warning(
        f"run {run.run_id} of {run.job_name} failed (partition {run.tags.get('dagster/partition', '-')}); "
        f"failed steps: {steps}"
    )


nightly_twin_refresh = dg.ScheduleDefinition(
    name="nightly_twin_refresh",
    job=twin_refresh_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly rebuild of twins, models and simulations.",
)
