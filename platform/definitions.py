"""The code location's entry file, loaded by path from workspace.yaml. It only wires definitions
together: every dataset declared in platform/zones/*.yaml becomes landing, staging and quarantine
assets, an ingest job and a file-arrival sensor; the dbt project becomes the ods and analytics
assets; marts declared under `serving:` become serving assets. The environment is resolved at
run time."""

import dagster as dg

from assets.alerting import build_alerting_sensor
from assets.compaction import build_compaction
from assets.dbt import build_dbt_assets
from assets.ingest import build_dataset
from assets.operations import build_operations
from assets.sensors import build_events_sensor, build_sensor, build_strays_sensor, set_aside_job
from assets.serving import build_serving_assets
from assets.steward import build_steward_job
from core.zones import all_datasets, load_zones
from resources.platform import PlatformResource

datasets = [build_dataset(ds) for ds in all_datasets()]
modelled = [build_dbt_assets(), *build_serving_assets(load_zones())]
operations, operations_job, operations_schedule = build_operations(load_zones())
compaction_job, compaction_schedule = build_compaction([d.dataset for d in datasets])

defs = dg.Definitions(
    assets=[d.assets for d in datasets] + modelled + operations,
    schedules=[operations_schedule, compaction_schedule],
    jobs=[*(d.job for d in datasets), *(build_steward_job(d) for d in datasets), set_aside_job, operations_job,
          compaction_job],
    sensors=[
        *(build_sensor(d) for d in datasets),
        build_strays_sensor([d.dataset for d in datasets]),
        build_events_sensor(datasets),
        build_alerting_sensor(load_zones()),
        # Builds ods, analytics and serving when staging partitions are published with their
        # blocking checks passed (see assets.dbt.upstream_published_and_checked).
        dg.AutomationConditionSensorDefinition(
            "modelled_zones_automation",
            target=dg.AssetSelection.assets(*modelled),
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=10,
        ),
    ],
    resources={"platform": PlatformResource()},
    executor=dg.in_process_executor,  # one process per run: files are streamed, not parallelised
)
