"""The code location as Dagster loads it: a snapshot of the asset graph, and the promises about
loading (by path, offline, without shadowing the standard library's ``platform``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support import REPO, load_definitions_module

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def graph_snapshot() -> dict:
    defs = load_definitions_module().defs
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "group": node.group_name,
            "owners": list(node.owners),
            "kinds": sorted(node.kinds),
            "partitions": getattr(node.partitions_def, "name", None),
            "checks": sorted(c.name for c in node.check_keys),
            "freshness": node.freshness_policy is not None,
        }
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in defs.jobs or []),
        "sensors": sorted(s.name for s in defs.sensors or []),
    }


def test_asset_graph_matches_snapshot() -> None:
    snap = graph_snapshot()
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(snap, indent=2, sort_keys=True) + "\n")
    assert snap == json.loads(SNAPSHOT.read_text()), "asset graph changed: review, then UPDATE_SNAPSHOTS=1"


def test_every_asset_follows_the_conventions() -> None:
    for key, node in graph_snapshot()["assets"].items():
        zone, insight_zone, _ = key.split("/")
        assert zone in {"landing", "staging", "quarantine", "ods", "analytics", "serving", "operations"}
        if key == "operations/platform/operations_incidents":  # the platform-wide alert history
            assert node["group"] == "operations" and node["kinds"]
            continue
        assert node["group"] == insight_zone
        assert node["owners"] and node["kinds"]
    assets = graph_snapshot()["assets"]
    assert assets["staging/mobility/staging_yellow_trips"]["deps"] == ["landing/mobility/landing_yellow_trips"]
    assert assets["staging/mobility/staging_yellow_trips"]["checks"] == ["contract", "reconciliation"]


def test_every_node_of_the_lineage_graph_is_distinguishable() -> None:
    # The graph draws only a key's last part: it must be unique and name its zone.
    labels = [key.split("/")[-1] for key in graph_snapshot()["assets"]]
    assert len(labels) == len(set(labels)), sorted(x for x in labels if labels.count(x) > 1)
    assert all(label.startswith(key.split("/")[0] + "_") for key, label in zip(graph_snapshot()["assets"], labels,
                                                                                strict=True))
    # dbt's "staging" layer is the lake zone only: no model is named stg_* (they are base_* in ods).
    assert not [label for label in labels if "stg_" in label]


def test_unbroken_lineage_from_landing_to_every_served_mart() -> None:
    from core.zones import load_zones

    assets = graph_snapshot()["assets"]
    order = ["serving", "analytics", "ods", "staging", "landing"]
    served = [f"serving/{z.name}/serving_{m}" for z in load_zones() for m in z.spec.serving]
    assert served
    for key in served:
        # Walk upstream: each step must reach the next zone down, ending in landing.
        frontier, reached = {key}, ["serving"]
        while frontier:
            parents = {p for k in frontier for p in assets[k]["deps"]}
            zones = {p.split("/")[0] for p in parents}
            nxt = order[order.index(reached[-1]) + 1] if reached[-1] != "landing" else None
            if nxt in zones:
                reached.append(nxt)
            frontier = {p for p in parents if p in assets}
        assert reached == order, f"{key}: lineage reaches only {reached}"


def test_platform_folder_is_not_a_package_and_does_not_shadow_stdlib() -> None:
    assert not (REPO / "platform" / "__init__.py").exists()
    out = subprocess.run(
        [sys.executable, "-c", "import platform, sys; print(platform.__file__); platform.python_version()"],
        cwd=REPO, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout.strip()
    assert not out.startswith(str(REPO / "platform")), out


def test_definitions_load_offline_without_reading_the_environment() -> None:
    # A bogus environment must not matter at load time: it is resolved when a run needs it.
    code = (
        "import importlib.util, time; t = time.time();"
        "s = importlib.util.spec_from_file_location('d', 'platform/definitions.py');"
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m);"
        "m.defs.resolve_asset_graph(); print(round(time.time() - t, 2))"
    )
    env = {**os.environ, "PLATFORM_ENV": "does-not-exist", "PLATFORM_HOME": "/nonexistent",
           "AWS_ACCESS_KEY_ID": "x", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    float(out.stdout.strip())  # it printed its load time: loading finished
