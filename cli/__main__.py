"""``python -m cli <command>``: the platform's small command-line tools.

- ``seed``: copy the bundled sample files into the ingress area of PLATFORM_HOME;
- ``dagster-home``: write the Dagster instance settings for ``make run`` under DAGSTER_HOME;
- ``generate trips|expenses``: write larger TLC-like or expense files of a chosen size;
- ``dbt-sources``: regenerate the dbt sources from the zone declarations;
- ``dbt-parse``: write the dbt manifest that the Dagster definitions load;
- ``validate``: validate every environment and insight-zone declaration;
- ``serving status|stop``: the local embedded PostgreSQL (serving zone): where to connect, or stop it;
- ``infra render|check|grants|diff``: an AWS environment's CloudFormation template, the review of its
  policies, the analysts' database grants (SQL), and the promotion review of two environments' declarations;
- ``stand-in``: start the AWS stand-ins (moto over TLS with an environment's stack, PostgreSQL as Redshift
  and Aurora) for a demo.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
from pathlib import Path

from core.errors import ConfigError, PlatformError
from core.paths import REPO_ROOT
from resources.environment import load_environment, resolve, validate_all

SAMPLES = REPO_ROOT / "samples"
INSTANCE_HEADER = "# Written by `python -m cli dagster-home` for `make run`."
INSTANCE_YAML = INSTANCE_HEADER + """ Rewritten when the platform's settings change,
# unless you remove this first line (then it is yours and left alone).
run_launcher:
  # Dagster's default launcher, which also tells run monitoring when a run's process has died.
  module: resources.run_launcher
  class: LocalRunLauncher
concurrency:
  runs:
    max_concurrent_runs: 2    # two cores: two runs at a time
    tag_concurrency_limits:
      # Runs of the same delivered file never overlap (a retry, a manual re-run, the sensor's run).
      - key: dagster/partition
        value: {applyLimitPerUniqueValue: true}
        limit: 1
      # Runs that automation starts (dbt, serving) take one slot at most: an arriving file always
      # finds one free, instead of queueing behind the modelled zones.
      - key: dagster/from_automation_condition
        value: "true"
        limit: 1
  pools:
    default_limit: 1          # the warehouse pool: one run at a time touches the DuckDB warehouse
    granularity: run          # a run waits in the queue, not holding a run slot, until the pool is free
run_queue:
  dequeue_interval_seconds: 1 # start a queued run within a second, not five
run_monitoring:
  enabled: true               # a run whose process died is marked failed...
  poll_interval_seconds: 5
  start_timeout_seconds: 60   # a run that never got going (e.g. its process died starting) fails after this
  cancel_timeout_seconds: 60
run_retries:
  enabled: true               # ...and started again
  max_retries: 2
  retry_on_asset_or_op_failure: false  # a failed step has its own retry policy (transient errors only)
sensors:
  use_threads: true
  num_workers: 4
freshness:
  enabled: true               # the freshness daemon evaluates every asset's freshness policy (every 30 s)
telemetry:
  enabled: false
"""


def seed(home: str | None) -> int:
    """The samples into the selected environment's ingress (a folder, or the S3 prefix)."""
    from resources.platform import PlatformResource

    platform = PlatformResource(home=home)
    env, ingress = platform.env(), platform.ingress()
    count = 0
    for src in sorted(SAMPLES.glob("*/*/*")):
        if not src.is_file() or src.name.startswith((".", "README")):
            continue
        zone, dataset = src.parent.parent.name, src.parent.name
        # Written under a temporary name, then published: the sensor never sees a half-written file.
        tmp = (zone, dataset, f".{src.name}.tmp")
        with ingress.open_output(*tmp) as out, src.open("rb") as f:
            shutil.copyfileobj(f, out)
        ingress.publish(tmp, (zone, dataset, src.name))
        count += 1
        print(f"seeded {ingress.uri(zone, dataset, src.name)}")
    print(f"{count} sample files are in {env.ingress.root}; the sensors pick them up within seconds.")
    return 0


def dagster_home() -> int:
    home = Path(os.environ.get("DAGSTER_HOME") or resolve()[1] / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    current = target.read_text() if target.exists() else None
    if current is None or (current.startswith(INSTANCE_HEADER) and current != INSTANCE_YAML):
        target.write_text(INSTANCE_YAML)
        print(f"wrote {target}")
    print(f"Dagster instance: {home}")
    return 0


def generate(kind: str, out: Path, size: int, seed_: int, error_rate: float | None,
             day: dt.date | None = None) -> int:
    from cli import generate as gen

    kwargs: dict = {} if error_rate is None else {"error_rate": error_rate}
    if kind == "trips":
        path = gen.trips(out, size, seed=seed_, **kwargs)
    else:
        path = gen.expenses(out, size, seed=seed_, day=day or dt.date.today(), **kwargs)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


def dbt_parse() -> int:
    """``dbt parse``: offline, no warehouse connection; writes dbt_project/target/manifest.json."""
    import subprocess

    from core.paths import DBT_DIR

    dbt = Path(sys.executable).parent / "dbt"
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    done = subprocess.run([str(dbt), "parse", "--quiet", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)],
                          env=env)
    if done.returncode == 0:
        print(f"dbt manifest: {DBT_DIR / 'target' / 'manifest.json'}")
    return done.returncode


def validate(home: str | None) -> int:
    from core.zones import ZONES_DIR, load_zone

    errors = []
    for name, loaded in validate_all(home).items():
        if isinstance(loaded, ConfigError):
            errors.append(str(loaded))
        else:
            print(f"ok  environment {name}")
    for path in sorted(ZONES_DIR.glob("*.yaml")):
        try:
            zone = load_zone(path)
            for ds in zone.datasets:
                ds.contract  # noqa: B018 - compiling the contract probes every rule
            print(f"ok  insight zone {zone.name}: {', '.join(d.name for d in zone.datasets)}")
        except PlatformError as e:
            errors.append(f"{path}: {e}" if str(path) not in str(e) else str(e))
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


def serving(action: str, home: str | None) -> int:
    from resources.serving.embedded import local_status, stop_local

    _, platform_home = resolve("local", home)
    if action == "stop":
        stopped = stop_local(platform_home)
        print("stopped the embedded PostgreSQL" if stopped else "the embedded PostgreSQL was not running")
        return 0
    dsn = local_status(platform_home)
    if dsn is None:
        print(f"the embedded PostgreSQL under {platform_home / 'serving'} is not running "
              "(the first serving run starts it)")
        return 1
    print(f'running: psql "{dsn}"')
    return 0


def infra(a: argparse.Namespace) -> int:
    from resources.environment import environments_dir

    directory = str(environments_dir())
    if a.action == "diff":
        from infra.diff import diff

        left, right = (load_environment(n, a.home, directory) for n in (a.a, a.b))
        lines = diff(left, right)
        print("\n".join(lines) if lines else
              f"{a.a} and {a.b} differ only in their names (prefix, account, database prefix, environment name)")
        return 0
    from core.zones import load_zones

    env = load_environment(a.env, a.home, directory)
    if a.action == "check":
        from infra.check import check_template

        failed = 0
        for case, decision in check_template(env, load_zones()):
            ok = case.allowed == decision.allowed
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {case.what}: {decision.effect} ({decision.reason})")
        print(f"{failed} of the expectations failed" if failed else "every expectation holds")
        return 1 if failed else 0
    if a.action == "grants":
        from infra.grants import grants, to_sql

        sys.stdout.write(to_sql(env, a.database, grants(env, load_zones(), a.database, a.platform_user)))
        return 0
    from infra.cloudformation import render, to_json, to_yaml

    text = (to_yaml if a.format == "yaml" else to_json)(render(env, load_zones()))
    if a.out:
        a.out.write_text(text, encoding="utf-8")
        print(f"wrote {a.out}")
    else:
        sys.stdout.write(text)
    return 0


def stand_in(env_name: str, home: str | None, settle_seconds: int | None) -> int:
    """Every AWS system of the environment on this machine (infra.stand_in.demo); writes the
    variables to source into ``<PLATFORM_HOME>/stand-in/<env>.env``, then serves until interrupted."""
    import logging
    import shlex
    import signal
    import threading

    from infra.stand_in import demo

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request of the stand-in
    platform_home = resolve(home=home)[1]
    stop = threading.Event()
    # A Dagster instance of the demo's own, fresh each time: run keys and sensor cursors of another
    # run (a local `make run`, an earlier demo) would skip the samples as already requested.
    dagster_dir = platform_home / "stand-in" / f"{env_name}-dagster"
    shutil.rmtree(dagster_dir, ignore_errors=True)
    with demo(env_name, platform_home, settle_seconds=settle_seconds) as exports:
        exports = {**exports, "DAGSTER_HOME": str(dagster_dir)}
        # Set here, not earlier: starting the stand-ins installs other handlers (pgserver's).
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a closed terminal stops them too
            signal.signal(sig, lambda *_: stop.set())
        env_file = platform_home / "stand-in" / f"{env_name}.env"
        tmp = env_file.with_suffix(".tmp")
        tmp.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in exports.items()))
        tmp.chmod(0o600)  # it holds the stand-in's throwaway PII key
        tmp.replace(env_file)  # whole or absent: a script may wait for it
        print(f"AWS stand-in for {env_name!r}: moto at {exports['AWS_ENDPOINT_URL']} with the stack lake-{env_name}, "
              "PostgreSQL (TLS only) as Redshift and Aurora, secrets set, analysts' grants applied.\n"
              f"In another shell:\n\n    source {env_file}\n    make run\n\n"
              "The samples go to the S3 ingress prefix and flow to serving. Ctrl-C stops the stand-in.", flush=True)
        try:
            stop.wait()
        finally:
            env_file.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cli", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed", help="copy the bundled samples into ingress")
    s.add_argument("--home", help="PLATFORM_HOME (default: $PLATFORM_HOME or .platform/)")
    sub.add_parser("dagster-home", help="write Dagster instance settings under DAGSTER_HOME")
    g = sub.add_parser("generate", help="generate a larger sample file")
    g.add_argument("kind", choices=["trips", "expenses"])
    g.add_argument("--out", type=Path, help="output file (default: under PLATFORM_HOME/generated)")
    g.add_argument("--rows", type=int, default=1_000_000, help="trips: rows; expenses: reports")
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--error-rate", type=float, help="share of rows with a planted fault")
    g.add_argument("--day", type=dt.date.fromisoformat, help="expenses: the export's day (default: today)")
    sub.add_parser("dbt-sources", help="regenerate dbt_project/models/sources.yml from the zone YAML")
    sub.add_parser("dbt-parse", help="write the dbt manifest that the Dagster definitions load")
    v = sub.add_parser("validate", help="validate environment and insight-zone declarations")
    v.add_argument("--home")
    sv = sub.add_parser("serving", help="the local serving database: status (how to connect) or stop")
    sv.add_argument("action", choices=["status", "stop"])
    sv.add_argument("--home")
    inf = sub.add_parser("infra", help="an AWS environment's infrastructure: render, check, diff")
    isub = inf.add_subparsers(dest="action", required=True)
    r = isub.add_parser("render", help="print the environment's CloudFormation template")
    r.add_argument("--env", required=True)
    r.add_argument("--format", choices=["json", "yaml"], default="json")
    r.add_argument("--out", type=Path, help="write the template here instead of standard output")
    c = isub.add_parser("check", help="evaluate the template's policies against the expected access")
    c.add_argument("--env", required=True)
    gr = isub.add_parser("grants", help="the SQL an administrator runs for the analysts' database grants")
    gr.add_argument("--env", required=True)
    gr.add_argument("--database", choices=["warehouse", "serving"], required=True)
    gr.add_argument("--platform-user", required=True, help="the database user the platform connects as")
    d = isub.add_parser("diff", help="what differs in substance between two environments' declarations")
    d.add_argument("a")
    d.add_argument("b")
    for q in (r, c, gr, d):
        q.add_argument("--home")
    st = sub.add_parser("stand-in", help="start the AWS stand-in with an environment's stack, for a demo")
    st.add_argument("--env", default="test")
    st.add_argument("--home")
    st.add_argument("--settle-seconds", type=int, help="override the environment's sensors.settle_seconds")
    a = p.parse_args(argv)
    try:
        if a.cmd == "seed":
            return seed(a.home)
        if a.cmd == "dagster-home":
            return dagster_home()
        if a.cmd == "generate":
            stamp = (a.day or dt.date.today()).isoformat()
            name = f"yellow_tripdata_{stamp}.csv" if a.kind == "trips" else f"expenses_{stamp}.csv"
            out = a.out or resolve()[1] / "generated" / name
            return generate(a.kind, out, a.rows, a.seed, a.error_rate, a.day)
        if a.cmd == "dbt-parse":
            return dbt_parse()
        if a.cmd == "dbt-sources":
            from core.dbt_sources import write_sources

            print(f"wrote {write_sources()}")
            return 0
        if a.cmd == "serving":
            return serving(a.action, a.home)
        if a.cmd == "infra":
            return infra(a)
        if a.cmd == "stand-in":
            return stand_in(a.env, a.home, a.settle_seconds)
        return validate(a.home)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
