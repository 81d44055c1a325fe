"""The code location's entry file, loaded by path from workspace.yaml. It only wires definitions
together: every dataset declared in platform/zones/*.yaml becomes landing, staging and quarantine
assets, an ingest job and a file-arrival sensor. The environment is resolved at run time."""

import dagster as dg

from assets.ingest import build_dataset
from assets.zones import all_datasets
from resources.platform import PlatformResource

datasets = [build_dataset(ds) for ds in all_datasets()]

defs = dg.Definitions(
    assets=[a for d in datasets for a in (d.landing, d.staging)],
    jobs=[d.job for d in datasets],
    sensors=[d.sensor for d in datasets],
    resources={"platform": PlatformResource()},
    executor=dg.in_process_executor,  # one process per run: files are streamed, not parallelised
)
