"""The embedded PostgreSQL of the local environment: a real PostgreSQL 16 from the ``pgserver``
wheel, started on first use under ``PLATFORM_HOME/serving/pgdata`` and left running between runs
so people can query it with psql (``python -m cli serving status|stop``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg2.extensions

from resources.serving.postgres import ServingDatabase, ServingUnavailable


def start(pgdata: Path) -> ServingDatabase:
    """The embedded server of ``pgdata``: reused if running (by any process), else started
    (initialised on first use) and left running after this process exits."""
    pm = _postmaster(pgdata)
    if pm is None or not pm.ready:
        pgdata.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
            import pgserver
        # pgserver trusts any live pid in postmaster.pid; after a reboot that pid may belong to
        # another program, and postgres itself then refuses to start over the stale lock file.
        if pm is not None and not pm.alive:
            with contextlib.suppress(FileNotFoundError):
                (pgdata / "postmaster.pid").unlink()
        # Takes pgserver's inter-process lock, so concurrent first runs start one server.
        pgserver.PostgresServer(pgdata, cleanup_mode=None)
        pm = _postmaster(pgdata)
        if pm is None or not pm.ready:
            raise ServingUnavailable(f"the embedded PostgreSQL under {pgdata} did not start; see {pgdata / 'log'}")
    # The socket is under pgdata, or under the user's runtime directory when that path is too
    # long for a Unix socket: postmaster.pid says which.
    return ServingDatabase(_local_dsn(pm))


@dataclass(frozen=True)
class _Postmaster:
    pid: int
    socket_dir: Path
    port: int
    ready: bool
    alive: bool  # the pid is a running postgres process


def _local_pgdata(home: Path | str) -> Path:
    return Path(home).expanduser().resolve() / "serving" / "pgdata"


def _postmaster(pgdata: Path) -> _Postmaster | None:
    """What ``postmaster.pid`` says about the server of ``pgdata``; None without one (or while it is
    half written)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir, status = int(lines[0]), int(lines[3]), lines[4].strip(), lines[7].strip()
    except (FileNotFoundError, IndexError, ValueError):
        return None
    import psutil  # a dependency of pgserver, which only the local environment installs

    try:
        process = psutil.Process(pid)
        # A stopped postmaster lingers as a zombie until init reaps it.
        alive = process.name() == "postgres" and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        alive = False
    return _Postmaster(pid, Path(socket_dir), port, ready=alive and status == "ready" and bool(socket_dir), alive=alive)


def local_bin(program: str) -> Path:
    """A program of the PostgreSQL that pgserver ships (pg_ctl, psql, pg_dump, ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    return Path(pgserver.__file__).parent / "pginstall" / "bin" / program


def local_status(home: Path) -> str | None:
    """The psql connection string of the embedded server under ``home`` if it is running, else None."""
    pm = _postmaster(_local_pgdata(home))
    if pm is None or not pm.ready:
        return None
    return ServingDatabase(_local_dsn(pm)).dsn_for_humans()


def _local_dsn(pm: _Postmaster) -> str:
    return psycopg2.extensions.make_dsn(host=str(pm.socket_dir), port=pm.port, dbname="postgres", user="postgres")


def stop_local(home: Path) -> bool:
    """Stop the embedded server under ``home`` (fast shutdown: open sessions are disconnected).

    Returns False if it was not running.
    """
    pgdata = _local_pgdata(home)
    pm = _postmaster(pgdata)
    if pm is None or not pm.alive:
        return False
    # pg_ctl refuses to run as root; as root, pgserver runs the server as the owner of pgdata.
    owner = pgdata.stat().st_uid
    user = owner if os.geteuid() == 0 and owner != 0 else None
    done = subprocess.run(
        [str(local_bin("pg_ctl")), "-D", str(pgdata), "-m", "fast", "-w", "-t", "60", "stop"],
        user=user,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=90,
    )
    if done.returncode != 0 and _postmaster(pgdata) is not None:
        raise ServingUnavailable(f"could not stop the embedded PostgreSQL under {pgdata}: {done.stderr.strip()}")
    return True
