"""The environment loader: one place, validated files, clear errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from core.errors import ConfigError
from resources.environment import ENVIRONMENTS_DIR, load_environment, resolve, validate_all


@pytest.fixture
def env_dir(tmp_path: Path) -> Path:
    d = tmp_path / "environments"
    shutil.copytree(ENVIRONMENTS_DIR, d)
    return d


def test_every_shipped_environment_loads(tmp_path: Path) -> None:
    for name in ("local", "dev", "test", "prod"):
        env = load_environment(name, str(tmp_path))
        assert env.name == name
    local = load_environment("local", str(tmp_path))
    assert local.lake.zones["staging"] == f"{tmp_path}/lake/staging"
    assert local.catalog.path == f"{tmp_path}/catalog.duckdb"


def test_default_environment_is_local(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PLATFORM_ENV", raising=False)
    monkeypatch.setenv("PLATFORM_HOME", str(tmp_path))
    assert resolve() == ("local", tmp_path.resolve())


def test_unknown_environment(env_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown environment 'staging2'.*known: dev, local, prod, test"):
        load_environment("staging2", str(tmp_path), str(env_dir))


def test_unknown_key_names_file_line_and_field(env_dir: Path, tmp_path: Path) -> None:
    path = env_dir / "dev.yaml"
    path.write_text(path.read_text().replace("  database_prefix: dev_", "  database_prefix: dev_\n  colour: blue"))
    lines = path.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "colour" in text)
    with pytest.raises(ConfigError) as e:
        load_environment("dev", str(tmp_path), str(env_dir))
    assert f"{path}:{line}: catalog.colour: unknown key" in str(e.value)
    # `cli validate` validates every file and reports it...
    checked = validate_all(str(tmp_path), str(env_dir))
    assert isinstance(checked["dev"], ConfigError) and "catalog.colour: unknown key" in str(checked["dev"])
    assert not isinstance(checked["local"], ConfigError)


def test_a_typo_in_another_environment_does_not_stop_this_one(env_dir: Path, tmp_path: Path) -> None:
    """At run time only the selected environment is validated: a broken prod.yaml leaves local runs alone."""
    (env_dir / "prod.yaml").write_text((env_dir / "prod.yaml").read_text().replace("kind: glue", "kind: glu"))
    (env_dir / "test.yaml").write_text("lake: [unclosed\n")
    assert load_environment("local", str(tmp_path), str(env_dir)).name == "local"
    assert load_environment("dev", str(tmp_path), str(env_dir)).name == "dev"


def test_another_environment_is_read_for_the_places_it_claims_even_if_invalid(env_dir: Path, tmp_path: Path) -> None:
    """prod.yaml with a typo still claims its buckets: dev may not point at them."""
    prod = env_dir / "prod.yaml"
    prod.write_text(prod.read_text().replace("kind: glue", "kind: glu"))
    dev = env_dir / "dev.yaml"
    dev.write_text(dev.read_text().replace("acme-lake-dev-landing", "acme-lake-prod-landing"))
    with pytest.raises(ConfigError, match="points at s3://acme-lake-prod-landing, which belongs to environment 'prod'"):
        load_environment("dev", str(tmp_path), str(env_dir))


def test_the_environments_folder_can_be_chosen_at_run_time(env_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    local = env_dir / "local.yaml"
    local.write_text(local.read_text().replace("lock_timeout_seconds: 30", "lock_timeout_seconds: 3"))
    monkeypatch.setenv("PLATFORM_ENVIRONMENTS_DIR", str(env_dir))
    assert load_environment("local", str(tmp_path)).catalog.lock_timeout_seconds == 3


def test_missing_key(env_dir: Path, tmp_path: Path) -> None:
    path = env_dir / "local.yaml"
    text = path.read_text()
    path.write_text(text.replace("ingress:\n  root: ${PLATFORM_HOME}/ingress", ""))
    with pytest.raises(ConfigError, match=r"local.yaml:\d+: ingress: missing required key"):
        load_environment("local", str(tmp_path), str(env_dir))


def test_s3_lake_requires_kms(env_dir: Path, tmp_path: Path) -> None:
    path = env_dir / "prod.yaml"
    path.write_text(re.sub(r"(?m)^  kms_key_id: .*\n", "", path.read_text()))
    with pytest.raises(ConfigError, match="an S3 lake needs kms_key_id"):
        load_environment("prod", str(tmp_path), str(env_dir))


def test_environment_pointing_at_another_environments_bucket(env_dir: Path, tmp_path: Path) -> None:
    path = env_dir / "test.yaml"
    path.write_text(path.read_text().replace("acme-lake-test-staging", "acme-lake-prod-staging"))
    expected = r"points at s3://acme-lake-prod-staging, which belongs to environment 'prod'"
    with pytest.raises(ConfigError, match=expected):
        load_environment("test", str(tmp_path), str(env_dir))


def test_invalid_yaml(env_dir: Path, tmp_path: Path) -> None:
    (env_dir / "dev.yaml").write_text("lake: [unclosed\n")
    with pytest.raises(ConfigError, match=r"dev.yaml:\d+: invalid YAML"):
        load_environment("dev", str(tmp_path), str(env_dir))


def test_name_must_match_file(env_dir: Path, tmp_path: Path) -> None:
    path = env_dir / "dev.yaml"
    path.write_text("name: prod\n" + path.read_text())
    with pytest.raises(ConfigError, match="name 'prod' does not match the file name 'dev'"):
        load_environment("dev", str(tmp_path), str(env_dir))


@pytest.mark.parametrize(("old", "new", "message"), [
    ("s3://acme-lake-prod-staging/staging", "s3://Acme_Lake/staging", "S3 bucket 'Acme_Lake' must match"),
    ("s3://acme-lake-prod-staging/staging", "s3://acme-lake-prod-staging/a b", "S3 prefix"),
    ("s3://acme-lake-prod-staging/staging", "/srv/lake/staging", "either every zone is on S3 or none is"),
    ("s3://acme-lake-prod-staging/staging", "s3://acme-lake-prod-landing/x", "one bucket per zone"),
    ("s3://acme-lake-prod-ingress/ingress", "gs://acme/ingress", "only local paths and s3:// URIs"),
    ("alias/acme-lake-prod", "my key", "lake.kms_key_id 'my key' must match"),
    ('account_id: "333333333333"', 'account_id: "3333"', "aws.account_id '3333' must match"),
    ("region: eu-west-1", "region: europe", "aws.region 'europe' must match"),
    ("database_prefix: prod_", "database_prefix: prod;drop", "lower snake_case ending in _"),
    ("database: lake", 'database: "lake; drop table x"', "warehouse.database"),
    ("host: acme-lake-prod.", "host: evil host.", "warehouse.host"),
    ("role/acme-lake-prod-redshift-copy", "role/x' --", "warehouse.copy_role_arn"),
    ("arn:aws:iam::333333333333:role/acme-lake-prod-redshift-copy",
     "arn:aws:iam::111111111111:role/acme-lake-prod-redshift-copy", "is not in account 333333333333"),
    ("  ca_bundle: /etc/ssl/certs/rds-global-bundle.pem", "  #", "needs ca_bundle: TLS is verified"),
    ("secret_name: acme-lake-prod/serving", "secret_name: \"a secret with spaces\"", "serving.secret_name"),
])
def test_aws_identifiers_are_strict(env_dir: Path, tmp_path: Path, old: str, new: str, message: str) -> None:
    path = env_dir / "prod.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_environment("prod", str(tmp_path), str(env_dir))


def test_aws_section_required_for_aws_backends(env_dir: Path, tmp_path: Path) -> None:
    path = env_dir / "dev.yaml"
    path.write_text(re.sub(r"(?ms)^aws:\n(  .*?\n)+", "", path.read_text()))
    with pytest.raises(ConfigError, match="an aws section .* is needed for an S3 lake, S3 ingress, a glue catalog"):
        load_environment("dev", str(tmp_path), str(env_dir))


@pytest.mark.parametrize("shared", ["acme-lake-prod/warehouse", "alias/acme-lake-prod", "acme-lake-prod/pii-key"])
def test_secrets_and_keys_are_not_shared(env_dir: Path, tmp_path: Path, shared: str) -> None:
    path = env_dir / "test.yaml"
    text = path.read_text()
    old = {"acme-lake-prod/warehouse": "acme-lake-test/warehouse", "alias/acme-lake-prod": "alias/acme-lake-test",
           "acme-lake-prod/pii-key": "acme-lake-test/pii-key"}[shared]
    path.write_text(text.replace(old, shared, 1))
    with pytest.raises(ConfigError, match="which belongs to environment 'prod'"):
        load_environment("test", str(tmp_path), str(env_dir))


def test_environments_may_share_an_account(env_dir: Path, tmp_path: Path) -> None:
    """One account for test and prod is a legitimate setup: they are told apart by their prefix,
    buckets, key and secrets, which stay refused when shared."""
    path = env_dir / "test.yaml"
    path.write_text(path.read_text().replace("222222222222", "333333333333"))
    assert load_environment("test", str(tmp_path), str(env_dir)).aws.account_id == "333333333333"


def test_spark_defaults_to_a_local_session_and_a_cluster_needs_all_its_names(env_dir: Path, tmp_path: Path) -> None:
    assert load_environment("local", str(tmp_path), str(env_dir)).spark.kind == "local"
    path = env_dir / "test.yaml"
    base = path.read_text()
    path.write_text(base + "spark:\n  kind: emr_serverless\n  pipes_bucket: acme-lake-test-pipes\n")
    with pytest.raises(ConfigError, match="spark.kind emr_serverless needs spark.script_uri, spark.application_id, "
                                          "spark.execution_role_arn"):
        load_environment("test", str(tmp_path), str(env_dir))
    path.write_text(base + "spark:\n  kind: emr_serverless\n  pipes_bucket: acme-lake-test-pipes\n"
                    "  script_uri: s3://acme-lake-test-artifacts/job.py\n  application_id: app1\n"
                    "  execution_role_arn: arn:aws:iam::222222222222:role/acme-lake-test-spark\n")
    spark = load_environment("test", str(tmp_path), str(env_dir)).spark
    assert (spark.kind, spark.application_id) == ("emr_serverless", "app1")
    local = env_dir / "local.yaml"
    local.write_text(local.read_text() + "spark:\n  kind: glue\n  job_name: stage\n  pipes_bucket: lake-pipes\n")
    with pytest.raises(ConfigError, match=r"an aws section .* is needed for spark on glue, a pipes bucket"):
        load_environment("local", str(tmp_path / "other"), str(env_dir))  # another key: loads are cached
