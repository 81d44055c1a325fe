"""Where the PII hashing key comes from (resources/pii.py) and how it reaches a DuckDB connection."""

import duckdb
import pytest

from resources.pii import LOCAL_DEVELOPMENT_KEY, PiiKeyMissing, pii_key
from resources.warehouse.duckdb_session import Plugin


def test_the_key_comes_from_the_environment_and_never_prints() -> None:
    key = pii_key({"PLATFORM_PII_KEY": "k1", "PLATFORM_ENV": "prod"})
    assert key.get_secret_value() == "k1"
    assert "k1" not in str(key) and "k1" not in repr(key) and "k1" not in f"{key}"


@pytest.mark.parametrize("environ", [{}, {"PLATFORM_ENV": "local"}, {"PLATFORM_ENV": "local", "PLATFORM_PII_KEY": ""}])
def test_only_local_falls_back_to_the_development_key(environ: dict[str, str]) -> None:
    assert pii_key(environ).get_secret_value() == LOCAL_DEVELOPMENT_KEY


@pytest.mark.parametrize("env", ["dev", "test", "prod"])
def test_other_environments_refuse_to_run_without_their_key(env: str) -> None:
    with pytest.raises(PiiKeyMissing, match=f"PLATFORM_PII_KEY is not set: environment '{env}'"):
        pii_key({"PLATFORM_ENV": env})


def test_the_plugin_sets_the_key_on_connections_and_cursors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_PII_KEY", "it's a key")
    plugin = Plugin(name="duckdb_session", plugin_config={})
    con = duckdb.connect()
    cursor = con.cursor()  # a cursor is a new connection: it does not inherit the variable
    plugin.configure_connection(con)
    assert cursor.execute("select getvariable('platform_pii_key')").fetchone() == (None,)
    plugin.configure_cursor(cursor)
    for c in (con, cursor):
        assert c.execute("select getvariable('platform_pii_key')").fetchone() == ("it's a key",)
