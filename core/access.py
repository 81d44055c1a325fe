"""Who may read what, declared once: the IAM template (infra/cloudformation.py), the database
grants an administrator runs (infra/grants.py) and the column grants the Redshift warehouse keeps on
its staging tables (resources/warehouse/redshift.py) all follow these rules.

- Analysts of an insight zone form one group, ``analyst_<insight_zone>`` (an IAM role in the
  lake, a group in Redshift, a role in Aurora PostgreSQL), and read only their own zone.
- They read staging, ods, analytics and serving; never ingress, landing or quarantine.
- They never read a raw PII column: in staging those columns are left out of their grant (columns
  a database can grant one by one; S3 and IAM cannot, so there the whole dataset is withheld), and
  from ods on, PII is a keyed hash (dbt, ``keyed_hash``).
"""

from __future__ import annotations

from core.names import check_ident
from core.zones import Dataset, InsightZone

ANALYST_READS = ("staging", "ods", "analytics", "serving")
NEVER_ANALYSTS = ("ingress", "landing", "quarantine")


def analyst_group(insight_zone: str) -> str:
    """``analyst_mobility``: the database group (Redshift) or role (PostgreSQL) of a zone's analysts."""
    return check_ident(f"analyst_{insight_zone}", "group")


def pii_columns(dataset: Dataset) -> frozenset[str]:
    return frozenset(name for name, col in dataset.spec.contract.columns.items() if col.pii)


def pii_datasets(zone: InsightZone) -> list[str]:
    """The zone's datasets with at least one PII column (their staged values are raw)."""
    return [d.name for d in zone.datasets if pii_columns(d)]

