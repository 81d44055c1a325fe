"""The AWS stand-in of the tests (see infra/stand_in.py): one moto server per test session, in
server mode over TLS on a free loopback port. The code under test is the production path: boto3
finds the server through ``AWS_ENDPOINT_URL`` only."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from infra.stand_in import (  # noqa: F401 - re-exported for the tests
    STAND_IN_ENV,
    MotoServer,
    clients,
    create_skipped_resources,
    deploy_stack,
    secret_string,
)

REPO = Path(__file__).resolve().parent.parent


def clean_env() -> dict[str, str]:
    """This environment without the variables a stand-in sets (it sets its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PLATFORM_", "PG", "MOTO_"))}


def start_demo(home: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """The README's demo stand-in (``python -m cli stand-in --env test``) under ``home``, once it has
    written its variables; returns the process and those variables."""
    log = open(home.parent / "stand-in.log", "wb")  # noqa: SIM115 - the process holds it
    proc = subprocess.Popen([sys.executable, "-m", "cli", "stand-in", "--env", "test", "--home", str(home),
                             "--settle-seconds", "1"], cwd=REPO, env=clean_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    env_file = home / "stand-in" / "test.env"
    deadline = time.monotonic() + 180
    while not env_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_demo(proc)
            raise RuntimeError(f"the stand-in did not come up:\n{(home.parent / 'stand-in.log').read_text()[-4000:]}")
        time.sleep(0.5)
    exports = {}
    for line in env_file.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        exports[key] = shlex.split(value)[0]
    return proc, exports


def stop_demo(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops it (SIGKILL after 30 s)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
