"""What every sink kind is made of: its spec model (``SinkSpecBase``), the settings it takes
from its pipeline (``SinkSetup``) and its IO manager (``SinkIOManager``), which works from the
validated spec itself — no setting is copied.

A sink kind is a package under ``etl_assets/sinks/`` holding a ``spec.py`` (a subclass of
``SinkSpecBase`` with a ``kind`` literal) and an ``io_manager.py`` (a subclass of
``SinkIOManager``), plus one line in :mod:`etl_assets.sinks.registry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import pyarrow as pa
from dagster import InputContext, IOManager, OutputContext, TableSchema
from pydantic import Field, field_validator

from etl_assets.batches import RecordBatchStream
from etl_assets.code_versions import NotData
from etl_assets.dead_letters import DeadLetterStore
from etl_assets.governance import GovernanceSettings
from etl_assets.partition_outputs import (
    PartitionOutput,
    add_partition_metadata,
    partition_streams,
    windows_progress,
)
from etl_assets.secrets import mask_text
from etl_assets.settings import check_reference
from etl_assets.sinks.check_settings import CheckSettings
from etl_assets.watermark import Bound, Window


class SinkSpecBase(GovernanceSettings):
    """The settings every sink has: which source feeds it, the transform between them, and
    governance (``GovernanceSettings``; a sink's group defaults to its source's)."""

    # False: the sink's transform makes something else than record batches (JSON documents),
    # which its IO manager applies itself.
    transform_makes_batches: ClassVar[bool] = True

    kind: str
    source: str = Field(description="name of the source whose rows this sink receives")
    transform: str | None = Field(
        None, description="module:function applied to every batch before it is written"
    )

    checks: NotData[CheckSettings] = Field(default_factory=CheckSettings,
                                           description="asset checks run after each write")

    _transform_ref = field_validator("transform")(check_reference)

    def describe_target(self) -> str:
        """Where the rows go, for descriptions and logs (never holds a secret)."""
        return self.kind

    def asset_kinds(self) -> set[str]:
        """The asset's kinds in the UI: the real format or system (``csv``, ``postgres``)."""
        return {self.kind}

    def check_in_pipeline(self, setup: SinkSetup[SinkSpecBase]) -> None:
        """Raise ValueError when the sink cannot work with what its pipeline gives it (e.g. a
        mode that needs a primary key the source lacks); called when the spec is validated."""


S = TypeVar("S", bound=SinkSpecBase)


@dataclass(frozen=True)
class SinkSetup(Generic[S]):
    """A sink's validated spec with what it takes from its pipeline."""

    name: str
    spec: S
    primary_key: list[str]
    """The sink's own key when it gives one (``[]`` means none), else its source's."""
    cursor_column: str
    """The column of the written rows that holds the source's cursor."""
    dead_letter_root: str
    """Where undelivered rows are kept: a folder or an fsspec URL (``${VAR}`` expanded when
    used)."""
    dead_letter_options: dict[str, Any] = field(default_factory=dict)
    """The fsspec ``storage_options`` of ``dead_letter_root``."""

    @classmethod
    def of(cls, name: str, spec: S, *, source_primary_key: list[str], source_cursor: str,
           dead_letter_root: str,
           dead_letter_options: dict[str, Any] | None = None) -> SinkSetup[S]:
        """The setup of sink ``name`` fed by a source with this key and cursor: the sink's
        own ``primary_key`` and ``cursor_column`` win when it gives them."""
        key = getattr(spec, "primary_key", None)
        return cls(name=name, spec=spec,
                   primary_key=list(key if key is not None else source_primary_key),
                   cursor_column=getattr(spec, "cursor_column", None) or source_cursor,
                   dead_letter_root=dead_letter_root,
                   dead_letter_options=dict(dead_letter_options or {}))

    @property
    def where(self) -> str:
        """How errors name the sink."""
        return f"sink {self.name!r}"


@dataclass(frozen=True)
class WindowCount:
    """What the target holds of one window, for the row-count reconciliation check.

    A keyed sink is asked about the keys of the rows the run gave it: of those keys, ``rows``
    the target holds with a cursor in the window and ``newer`` only with a cursor past its
    ``hi`` (a later window replaced them: newest wins); a key the target lacks, or holds
    older, is a lost row. A sink without a key counts the target's rows in the window
    (``newer`` 0): a duplicate shows as a surplus.
    """

    rows: int
    newer: int = 0


Metadata = Mapping[str, object]


def unreadable_target(error: BaseException) -> dict[str, str]:
    """``target_metadata_error``: what ``target_metadata()`` gives, beside what it knows
    without the target, when the target cannot be read after the write (the rows were
    handled: the run does not fail for it). Masked."""
    return {"target_metadata_error": mask_text(f"{type(error).__name__}: {error}")}
"""Asset metadata: label -> a value Dagster's ``normalize_metadata`` takes."""


def _without_columns(context: OutputContext, partition: str | None,
                     stream: RecordBatchStream) -> Metadata:
    """A partition without rows or columns, for a sink that cannot take one: nothing is
    written (there are no columns to shape a target with)."""
    rows = sum(batch.num_rows for batch in stream)  # none; read to its end: the pin goes
    context.log.info(f"{context.asset_key.to_user_string()} [{partition}]: no rows and no "
                     f"columns (the source could not tell them); the target is left as it is")
    return {"rows_written": rows}


class SinkIOManager(IOManager, Generic[S]):
    """The IO manager of one sink, built from its ``SinkSetup``: it writes the sink asset's
    record batches and reads nothing back.

    A subclass implements ``write`` (one partition's rows) and says what its target holds:
    ``target_metadata`` (Dagster's standard keys), and, where it can, ``count_window`` and
    ``target_columns`` for the asset checks (``counts_windows`` / ``has_columns`` say so when
    the definitions are built).
    """

    # True: the sink records a committed high watermark (``committed_watermark``) that a new
    # sensor starts after.
    keeps_watermark: ClassVar[bool] = False
    # True: ``count_window`` counts a window's rows in the target (reconciliation check).
    counts_windows: ClassVar[bool] = False
    # True: ``target_columns`` names the target's columns (schema drift check).
    has_columns: ClassVar[bool] = False
    # True: ``write`` takes a partition without columns (a window without rows whose source
    # could not tell its columns: a query, a function that gave nothing); else such a
    # partition leaves the target as it is (``rows_written`` 0).
    writes_without_columns: ClassVar[bool] = False

    def __init__(self, setup: SinkSetup[S]) -> None:
        self.setup = setup
        self.spec: S = setup.spec

    def handle_output(self, context: OutputContext, obj: PartitionOutput) -> None:
        """Write each partition the step materializes (one, or a range in a single-run
        backfill) in partition order; each partition's materialization gets what ``write``
        returns, and what the target holds after the last one (``target_metadata``)."""
        progress = windows_progress(context, "written")
        written = []
        for partition, stream in partition_streams(context, obj):
            if stream.schema.names or self.writes_without_columns:
                written.append((partition, self.write(context, partition, stream)))
            else:
                written.append((partition, _without_columns(context, partition, stream)))
            if progress:
                progress.add(int(written[-1][1].get("rows_written", 0)))  # type: ignore[call-overload]
        target = self.target_metadata()
        for partition, metadata in written:
            add_partition_metadata(context, partition, {**metadata, **target})

    def write(self, context: OutputContext, partition: str | None,
              stream: RecordBatchStream) -> Metadata:
        """Write one partition's rows (``partition`` None: unpartitioned); return what the run
        did to the target: ``rows_written``, ``rows_changed`` where known, timings."""
        raise NotImplementedError

    def target_metadata(self) -> Metadata:
        """What the target holds now, under Dagster's standard keys: ``dagster/table_name``
        (fully qualified) or ``dagster/uri`` (masked), ``dagster/column_schema`` (the
        target's types, nullability, the key as a constraint), ``dagster/row_count`` (rows in
        the target: exact where cheap, else the estimate under ``row_count_estimate``)."""
        return {}

    def declared_column_schema(self) -> TableSchema | None:
        """The target's columns known before any run (a declared table), for the definition."""
        return None

    def target_columns(self) -> list[str] | None:
        """The target's column names now (None: no target yet). Only when ``has_columns``."""
        return None

    def count_window(self, window: Window, keys: pa.Table | None) -> WindowCount:
        """What the target holds of ``window`` (lo < cursor <= hi), see ``WindowCount``.
        ``keys``: the key columns of the rows the run was given (None for a sink without a
        key). Only when ``counts_windows``."""
        raise NotImplementedError(f"{self.setup.where}: kind {self.spec.kind} cannot count a "
                                  f"window's rows")

    def count_windows(self, asks: list[tuple[Window, pa.Table | None]]) -> list[WindowCount]:
        """``count_window`` for each (window, keys) of ``asks``, in order; a kind overrides it
        when asking together is cheaper (one connection for a range run's windows)."""
        return [self.count_window(window, keys) for window, keys in asks]

    def load_input(self, context: InputContext) -> object:
        raise NotImplementedError(f"{context.asset_key.to_user_string()} is a sink; read "
                                  f"{self.spec.describe_target()} instead")

    def dead_letter_store(self) -> DeadLetterStore:
        """Where this sink keeps rows it could not deliver (see :mod:`etl_assets.dead_letters`)."""
        return DeadLetterStore(self.setup.dead_letter_root, self.setup.dead_letter_options)

    def status(self) -> str | None:
        """One line on what the target holds, for ``etl-assets status`` (None: not known)."""
        return None

    def committed_watermark(self) -> Bound | None:
        """The high watermark the target has committed (None: none yet)."""
        raise NotImplementedError(f"{self.setup.where}: kind {self.spec.kind} keeps no "
                                  f"watermark")
