"""A real ``dagster dev`` for end-to-end tests and benchmarks: webserver, daemon and code server
over a temporary DAGSTER_HOME and PLATFORM_HOME, queried through its GraphQL API.

``dagster dev`` started in the background ignores SIGINT/SIGTERM unless it leads its own process
group (see GOTCHAS), so it is started with ``start_new_session=True`` and stopped by sending
SIGINT to the whole group, then SIGKILL as a last resort.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
DAGSTER = VENV / "bin" / "dagster"
PYTHON = VENV / "bin" / "python"
LOCATION = "lake_platform"
REPOSITORY = "__repository__"  # the implicit repository of a Definitions object
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_venv(timeout_s: float = 900) -> None:
    """Another session may still be building the venv (`make venv`): wait for its marker."""
    deadline = time.monotonic() + timeout_s
    while not (VENV / ".installed").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{VENV}/.installed did not appear within {timeout_s:.0f} s: run `make venv`")
        time.sleep(5)


def drop_file(target_dir: Path, name: str, data: bytes | Path) -> Path:
    """Deliver a file as a well-behaved uploader does: write a hidden temporary name, then rename."""
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = target_dir / f".{name}.{os.getpid()}.tmp"
    if isinstance(data, Path):
        shutil.copyfile(data, tmp)
    else:
        tmp.write_bytes(data)
    final = target_dir / name
    os.replace(tmp, final)
    return final


class GraphQLError(RuntimeError):
    pass


class DagsterDev:
    """``with DagsterDev(platform_home, dagster_home) as dev: dev.graphql(...)``."""

    def __init__(self, platform_home: Path, dagster_home: Path, port: int | None = None,
                 log_path: Path | None = None, extra_env: dict[str, str] | None = None):
        self.platform_home = Path(platform_home)
        self.dagster_home = Path(dagster_home)
        self.extra_env = dict(extra_env or {})
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else self.dagster_home / "dagster_dev.log"
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.started_at = 0.0
        self.graphql_ready_s: float | None = None  # Popen → GraphQL answers
        self.location_ready_s: float | None = None  # Popen → code location loaded

    # -- process -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    @property
    def base_url(self) -> str:
        """The UI's address, as a browser opens it."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DAGSTER_HOME=str(self.dagster_home),
            PLATFORM_HOME=str(self.platform_home),
            PLATFORM_ENV="local",
            DAGSTER_DISABLE_TELEMETRY="1",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        env.pop("VIRTUAL_ENV", None)
        return env

    def start(self, timeout_s: float = 180) -> float:
        """Start ``dagster dev`` and wait until GraphQL answers and the code location is loaded.
        Returns the startup time in seconds."""
        wait_for_venv()
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        self.platform_home.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(PYTHON), "-m", "cli", "dagster-home"], cwd=REPO, env=self.env(), check=True,
                       capture_output=True, text=True)
        assert (self.dagster_home / "dagster.yaml").exists()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [str(DAGSTER), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO, env=self.env(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.location_ready_s or 0.0

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = self.started_at + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                data = self.graphql(
                    "{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus "
                    "locationOrLoadError { __typename ... on PythonError { message } } } } } }",
                    timeout_s=5,
                )
            except (OSError, GraphQLError):
                time.sleep(0.5)
                continue
            if self.graphql_ready_s is None:
                self.graphql_ready_s = time.monotonic() - self.started_at
            entries = {e["name"]: e for e in data["workspaceOrError"].get("locationEntries", [])}
            entry = entries.get(LOCATION)
            if entry and entry["loadStatus"] == "LOADED":
                loaded = entry["locationOrLoadError"] or {}
                if loaded.get("__typename") == "PythonError":
                    raise RuntimeError(f"code location {LOCATION} failed to load: {loaded.get('message')}")
                self.location_ready_s = time.monotonic() - self.started_at
                return
            time.sleep(0.5)
        raise TimeoutError(f"dagster dev not ready within {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 15) -> None:
        """SIGINT to the process group, wait up to ``grace_s``, then SIGKILL what is left."""
        proc, self.proc = self.proc, None
        try:
            if proc is None:
                return
            pgid = proc.pid  # start_new_session: the group id is the leader's pid
            _signal_group(pgid, signal.SIGINT)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and (proc.poll() is None or _group_alive(pgid)):
                time.sleep(0.2)
            if proc.poll() is None or _group_alive(pgid):
                left = [f"{p} {_cmdline(p)[:100]}" for p in _pids() if _pgid_of(p) == pgid and not _is_zombie(p)]
                print(f"dagster dev (pgid {pgid}) still running {grace_s:.0f} s after SIGINT: SIGKILL to "
                      f"{'; '.join(left) or 'its group'}", file=sys.stderr)
                _signal_group(pgid, signal.SIGKILL)
                proc.wait(timeout=10)
        finally:
            if self._log:
                self._log.close()
                self._log = None

    def processes(self) -> dict[int, str]:
        """pid → command line of every live process of this dagster dev (its process group)."""
        if self.proc is None:
            return {}
        pgid = self.proc.pid
        return {p: _cmdline(p) for p in _pids() if _pgid_of(p) == pgid and not _is_zombie(p)}

    def daemon_pid(self) -> int:
        [pid] = [p for p, cmd in self.processes().items() if "dagster._daemon run" in cmd]
        return pid

    def kill_all(self) -> None:
        """SIGKILL to every process of this dagster dev at once: a crash, not a shutdown."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            deadline = time.monotonic() + 15
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> DagsterDev:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- GraphQL -----------------------------------------------------------------------------

    def graphql(self, query: str, variables: dict | None = None, timeout_s: float = 30) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                payload = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise GraphQLError(f"HTTP {e.code}: {e.read()[:2000]!r}") from e
        if payload.get("errors"):
            raise GraphQLError(json.dumps(payload["errors"])[:4000])
        return payload["data"]

    def runs(self, job_name: str | None = None, limit: int = 200, cursor: str | None = None,
             statuses: list[str] | None = None) -> list[dict]:
        """Runs, newest first: id, job, status, tags (as a dict) and times."""
        flt: dict = {"pipelineName": job_name} if job_name else {}
        if statuses:
            flt["statuses"] = statuses
        data = self.graphql(
            """query Runs($filter: RunsFilter, $limit: Int, $cursor: String) {
                 runsOrError(filter: $filter, limit: $limit, cursor: $cursor) {
                   __typename
                   ... on Runs { results { runId jobName status creationTime startTime endTime
                                           tags { key value } } }
                   ... on PythonError { message }
                 } }""",
            {"filter": flt, "limit": limit, "cursor": cursor},
        )["runsOrError"]
        if data["__typename"] != "Runs":
            raise GraphQLError(f"runsOrError: {data}")
        out = []
        for r in data["results"]:
            r["tags"] = {t["key"]: t["value"] for t in r["tags"]}
            out.append(r)
        return out

    def all_runs(self, job_name: str | None = None, page: int = 500) -> list[dict]:
        out: list[dict] = []
        cursor = None
        while True:
            batch = self.runs(job_name, limit=page, cursor=cursor)
            out += batch
            if len(batch) < page:
                return out
            cursor = batch[-1]["runId"]

    def check_executions(self, asset_key: list[str], check_name: str, limit: int = 50) -> list[dict]:
        return self.graphql(
            """query Checks($key: AssetKeyInput!, $check: String!, $limit: Int!) {
                 assetCheckExecutions(assetKey: $key, checkName: $check, limit: $limit) {
                   runId status partition evaluation { success description }
                 } }""",
            {"key": {"path": asset_key}, "check": check_name, "limit": limit},
        )["assetCheckExecutions"]

    def failure_reason(self, run_id: str) -> str:
        """The innermost error message of a run's first failed step (or its run failure)."""
        events = self.graphql(
            """query L($id: ID!) { logsForRun(runId: $id, limit: 500) { ... on EventConnection { events {
                 __typename ... on MessageEvent { message }
                 ... on ExecutionStepFailureEvent { stepKey error { message cause { message cause { message } } } }
               } } } }""",
            {"id": run_id},
        )["logsForRun"].get("events", [])
        for e in events:
            if e["__typename"] == "ExecutionStepFailureEvent":
                err = e["error"] or {}
                while err.get("cause"):
                    err = err["cause"]
                return f"{e['stepKey']}: {(err.get('message') or '').strip()}"
        return next((e["message"] for e in events if e["__typename"] == "RunFailureEvent"), "")

    def run_messages(self, run_id: str, limit: int = 2000) -> list[tuple[str, str]]:
        """(event type, message) of a run's events, in order (step failures with their error)."""
        events = self.graphql(
            """query L($id: ID!, $limit: Int) { logsForRun(runId: $id, limit: $limit) { ... on EventConnection {
                 events { __typename ... on MessageEvent { message }
                   ... on ExecutionStepFailureEvent { error { message cause { message } } }
                   ... on ExecutionStepUpForRetryEvent { error { message cause { message } } } } } } }""",
            {"id": run_id, "limit": limit},
        )["logsForRun"].get("events", [])
        out = []
        for e in events:
            text = e.get("message") or ""
            err = e.get("error")
            while err:
                text += "\n" + (err.get("message") or "")
                err = err.get("cause")
            out.append((e["__typename"], text))
        return out

    def run_worker_pid(self, run_id: str) -> int | None:
        for _, message in self.run_messages(run_id):
            if message.startswith("Started process for run (pid: "):
                return int(message.split("pid: ")[1].split(")")[0])
        return None

    def launch_partition(self, job_name: str, partition: str) -> str:
        data = self.graphql(
            """mutation M($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
                 ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
                 ... on RunConfigValidationInvalid { errors { message } } } }""",
            {"p": {"selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job_name},
                   "runConfigData": {}, "executionMetadata": {"tags": [{"key": "dagster/partition",
                                                                        "value": partition}]}}},
        )["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise GraphQLError(f"launchRun: {data}")
        return data["run"]["runId"]

    def reexecute(self, run_id: str) -> str:
        data = self.graphql(
            """mutation R($p: ReexecutionParams!) { launchRunReexecution(reexecutionParams: $p) { __typename
                 ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
            {"p": {"parentRunId": run_id, "strategy": "FROM_FAILURE"}},
        )["launchRunReexecution"]
        if data["__typename"] != "LaunchRunSuccess":
            raise GraphQLError(f"launchRunReexecution: {data}")
        return data["run"]["runId"]

    def stop_sensor(self, sensor_name: str) -> None:
        """Stop a running sensor, as its toggle in the UI does."""
        sel = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": sensor_name}
        sensor = self.graphql("query S($sel: SensorSelector!) { sensorOrError(sensorSelector: $sel) { __typename "
                              "... on Sensor { id } } }", {"sel": sel})["sensorOrError"]
        if sensor["__typename"] != "Sensor":
            raise GraphQLError(f"sensor {sensor_name}: {sensor}")
        mutation = ("mutation T($id: String) { stopSensor(id: $id) { __typename "
                    "... on StopSensorMutationResult { instigationState { status } } "
                    "... on PythonError { message } } }")
        for attempt in range(3):
            try:
                stopped = self.graphql(mutation, {"id": sensor["id"]})["stopSensor"]
                break
            except GraphQLError as e:
                # Dagster's race: the daemon's first tick stores the sensor's state between the
                # mutation's read (none yet) and its insert. The state now exists; asking again
                # updates it, as a second click on the toggle would.
                if "already present in storage" not in str(e) or attempt == 2:
                    raise
                time.sleep(0.5)
        if (stopped.get("instigationState") or {}).get("status") != "STOPPED":
            raise GraphQLError(f"stopSensor {sensor_name}: {stopped}")

    def sensor_ticks(self, sensor_name: str, limit: int = 10) -> list[dict]:
        data = self.graphql(
            """query Ticks($sel: SensorSelector!, $limit: Int) {
                 sensorOrError(sensorSelector: $sel) {
                   __typename
                   ... on Sensor { sensorState { status ticks(limit: $limit) {
                       status timestamp runIds cursor skipReason error { message }
                       logEvents { events { message } } } } }
                   ... on PythonError { message }
                   ... on SensorNotFoundError { message }
                 } }""",
            {"sel": {"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION, "sensorName": sensor_name},
             "limit": limit},
        )["sensorOrError"]
        if data["__typename"] != "Sensor":
            raise GraphQLError(f"sensorOrError: {data}")
        return data["sensorState"]["ticks"]


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A group whose members are all zombies still "exists"; those are reaped by their parents.
    return any(_pgid_of(p) == pgid and not _is_zombie(p) for p in _pids())


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat_fields(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return raw[raw.rfind(")") + 2:].split()  # fields after "pid (comm) "


def _pgid_of(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[2]) if len(f) > 2 else None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _is_zombie(pid: int) -> bool:
    f = _stat_fields(pid)
    return bool(f) and f[0] == "Z"


def wait_until(predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.5,
               what: str = "condition") -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:.0f} s")
        time.sleep(interval_s)
