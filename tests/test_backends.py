"""The one place that chooses backends: each environment gets its siblings behind the same
interfaces, built without a network call (clients connect on first use)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from resources.catalog.base import Catalog
from resources.lake.base import FileStore
from resources.platform import PlatformResource
from resources.warehouse.base import Warehouse

EXPECTED = {
    "local": ("LocalStore", "DuckDBCatalog", "DuckDBWarehouse"),
    "dev": ("S3Store", "GlueCatalog", "RedshiftWarehouse"),
    "test": ("S3Store", "GlueCatalog", "RedshiftWarehouse"),
    "prod": ("S3Store", "GlueCatalog", "RedshiftWarehouse"),
}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch):
    """Any connection attempt fails the test: choosing a backend must not touch the network."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network call while choosing backends: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_environment_gets_its_backends_behind_the_same_interfaces(name: str, tmp_path: Path,
                                                                       offline) -> None:
    platform = PlatformResource(environment=name, home=str(tmp_path))
    lake, ingress, catalog, warehouse = platform.lake(), platform.ingress(), platform.catalog(), platform.warehouse()
    store_kind, catalog_kind, warehouse_kind = EXPECTED[name]
    env = platform.env()
    assert all(isinstance(s, FileStore) and type(s).__name__ == store_kind for s in (*lake.zones.values(), ingress))
    assert isinstance(catalog, Catalog) and type(catalog).__name__ == catalog_kind
    assert isinstance(warehouse, Warehouse) and type(warehouse).__name__ == warehouse_kind
    assert warehouse.dbt_target == env.warehouse.dbt_target
    # URIs keep their scheme end to end.
    for zone, store in lake.zones.items():
        assert store.uri() == env.lake.zones[zone].rstrip("/") or store.uri() == str(Path(env.lake.zones[zone]))
    assert "password" not in repr(warehouse).lower() or "***" in repr(warehouse)
