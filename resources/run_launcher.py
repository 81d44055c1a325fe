"""The run launcher of the local instance (``make run`` writes it into ``dagster.yaml``).

Dagster's default launcher starts each run in a process of the code server, but cannot tell run
monitoring whether that process is still alive, so a run whose process was killed together with
its code server (``dagster dev`` stopped hard, a machine that ran out of memory) would stay
"started" forever. This launcher is the default one plus that health check: the run's own engine
event names its process id; if no such process is alive any more, the run worker is reported
failed, run monitoring marks the run failed and run retries start it again.
"""

from __future__ import annotations

from typing import Any

import psutil
from dagster._core.events import DagsterEventType
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher
from dagster._core.storage.dagster_run import DagsterRun

# A process whose start is this much later than the run worker's event is another process that
# was given the same id.
_PID_REUSE_SLACK_S = 2.0


def _worker_pid(instance: Any, run_id: str) -> tuple[int, float] | None:
    """(pid, timestamp) of the run's latest 'started process' engine event."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT, ascending=False,
                                           limit=200).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = getattr(event, "engine_event_data", None) if event else None
        pid = data.metadata.get("pid") if data is not None and data.metadata else None
        if pid is not None and "Started process for run" in (event.message or ""):
            return int(pid.value), record.event_log_entry.timestamp
    return None


class LocalRunLauncher(DefaultRunLauncher):
    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        found = _worker_pid(self._instance, run.run_id)
        if found is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the run process has not reported yet")
        pid, started = found
        try:
            process = psutil.Process(pid)
            alive = process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= started + _PID_REUSE_SLACK_S
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            alive = False
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run process {pid} is alive")
        return CheckRunHealthResult(WorkerStatus.FAILED, f"the run's process {pid} is gone (killed, or its code "
                                    "server stopped); run retries start the run again")
