"""The catalog interface: which staged files make up each staging and quarantine table.

The catalog is the pointer that publishes a partition. Staging writes a delivered file's two
outputs (staged rows, quarantined rows) to their own versioned objects, then one catalog
transaction makes both visible together, and takes out of view the partitions it supersedes: a
reader sees a file's rows entirely or not at all, and never the staged rows of one version with
the quarantined rows of another.

States of a partition:

- ``published``: its staged rows are in the staging table, its quarantined rows in quarantine;
- ``held``: it failed a blocking check; its staged rows are out of the staging table (nothing
  downstream reads them), its quarantined rows are in quarantine, to say why;
- ``superseded``: a newer delivery of the same file name was published (``redelivery:
  supersede``); neither its staged nor its quarantined rows are in view. Its files stay in the
  lake, and its landing object and events stay for audit.

A held delivery does not supersede: the earlier published version stays in view until the new
one is published (re-delivered corrected, or released).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from core.errors import NotAvailable

State = Literal["published", "held", "superseded"]


@dataclass(frozen=True)
class PartitionVersion:
    """What staging produced for one delivered file."""

    insight_zone: str
    dataset: str
    partition_key: str
    source_file: str  # the delivered file's name: re-deliveries share it
    delivered_at_ns: int  # orders re-deliveries: the newest one wins
    staging_uri: str
    quarantine_uri: str
    passed: bool  # its blocking checks passed
    rows_staged: int
    rows_quarantined: int


@dataclass(frozen=True)
class PartitionRecord:
    version: PartitionVersion
    state: State
    superseded_by: str | None


@dataclass(frozen=True)
class PublishOutcome:
    state: State  # of the partition just published
    superseded: tuple[str, ...]  # partition keys this publish took out of view
    superseded_by: str | None  # when the partition just published is itself superseded


def resolve_states(versions: list[PartitionVersion], *, supersede: bool) -> dict[str, tuple[State, str | None]]:
    """Partition key → (state, superseded by) for the versions of one file name."""
    if not supersede:
        return {v.partition_key: ("published" if v.passed else "held", None) for v in versions}
    order = lambda v: (v.delivered_at_ns, v.partition_key)  # noqa: E731
    published = [v for v in versions if v.passed]
    live = max(published, key=order) if published else None
    out: dict[str, tuple[State, str | None]] = {}
    for v in versions:
        if live is not None and v.partition_key != live.partition_key and order(v) < order(live):
            out[v.partition_key] = ("superseded", live.partition_key)
        elif v.passed:
            out[v.partition_key] = ("published", None)
        else:
            out[v.partition_key] = ("held", None)
    return out


class Catalog(ABC):
    @abstractmethod
    def publish(self, version: PartitionVersion, *, supersede: bool) -> PublishOutcome:
        """Record ``version`` and make the views match, in one transaction."""

    def publish_many(self, versions: list[PartitionVersion], *, supersede: bool) -> list[PublishOutcome]:
        """Publish several versions (of one dataset) in turn, as ``publish`` would one after the
        other; a catalog that can do it in one transaction does (the local one: one rewrite of
        the views for a run's files, not one per file). Outcomes in the order given."""
        return [self.publish(v, supersede=supersede) for v in versions]

    @abstractmethod
    def partitions(self, insight_zone: str, dataset: str) -> list[PartitionRecord]: ...

    @abstractmethod
    def published_tables(self) -> set[tuple[str, str]]:
        """(schema, table) of every staging table with at least one published partition."""

    def query_hint(self) -> str:
        """Where a person runs the SQL the platform suggests (check metadata, alerts)."""
        return "the environment's catalog"

    # -- compaction (engine.compaction): several deliveries served from one file ----------------
    can_compact = False

    def compacted_uris(self, insight_zone: str, dataset: str) -> set[str]:
        return set()

    def swap_in_compacted(self, insight_zone: str, dataset: str, members: list[PartitionRecord],
                          staging_uri: str, quarantine_uri: str) -> list[str]:
        raise NotAvailable(f"{self!r} serves each delivery from its own files (a Glue partition is one "
                           "delivery's folder): compacting them is not available on this catalog yet")

    def retired_files(self, insight_zone: str, dataset: str, before_ns: int) -> list[str]:
        return []

    def forget_retired(self, insight_zone: str, dataset: str, uris: list[str]) -> None:
        return None

    def referenced_uris(self, insight_zone: str, dataset: str) -> set[str]:
        return {u for r in self.partitions(insight_zone, dataset)
                for u in (r.version.staging_uri, r.version.quarantine_uri)}
