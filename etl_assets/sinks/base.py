"""What every sink kind is made of: its spec model (``SinkSpecBase``), the settings it takes
from its pipeline (``SinkSetup``) and its IO manager (``SinkIOManager``), which works from the
validated spec itself — no setting is copied.

A sink kind is a package under ``etl_assets/sinks/`` holding a ``spec.py`` (a subclass of
``SinkSpecBase`` with a ``kind`` literal) and an ``io_manager.py`` (a subclass of
``SinkIOManager``), plus one line in :mod:`etl_assets.sinks.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from dagster import InputContext, IOManager
from pydantic import Field, field_validator

from etl_assets.dead_letters import DeadLetterStore
from etl_assets.settings import StrictModel, check_reference
from etl_assets.watermark import Bound


class SinkSpecBase(StrictModel):
    """The settings every sink has: which source feeds it and the transform between them."""

    # False: the sink's transform makes something else than record batches (JSON documents),
    # which its IO manager applies itself.
    transform_makes_batches: ClassVar[bool] = True

    kind: str
    source: str = Field(description="name of the source whose rows this sink receives")
    transform: str | None = Field(
        None, description="module:function applied to every batch before it is written"
    )

    _transform_ref = field_validator("transform")(check_reference)

    def describe_target(self) -> str:
        """Where the rows go, for descriptions and logs (never holds a secret)."""
        return self.kind

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
    """Where undelivered rows are kept (``${VAR}`` expanded when used)."""

    @classmethod
    def of(cls, name: str, spec: S, *, source_primary_key: list[str], source_cursor: str,
           dead_letter_root: str) -> SinkSetup[S]:
        """The setup of sink ``name`` fed by a source with this key and cursor: the sink's
        own ``primary_key`` and ``cursor_column`` win when it gives them."""
        key = getattr(spec, "primary_key", None)
        return cls(name=name, spec=spec,
                   primary_key=list(key if key is not None else source_primary_key),
                   cursor_column=getattr(spec, "cursor_column", None) or source_cursor,
                   dead_letter_root=dead_letter_root)

    @property
    def where(self) -> str:
        """How errors name the sink."""
        return f"sink {self.name!r}"


class SinkIOManager(IOManager, Generic[S]):
    """The IO manager of one sink, built from its ``SinkSetup``: it writes the sink asset's
    record batches and reads nothing back."""

    # True: the sink records a committed high watermark (``committed_watermark``) that a new
    # sensor starts after.
    keeps_watermark: ClassVar[bool] = False

    def __init__(self, setup: SinkSetup[S]) -> None:
        self.setup = setup
        self.spec: S = setup.spec

    def load_input(self, context: InputContext) -> object:
        raise NotImplementedError(f"{context.asset_key.to_user_string()} is a sink; read "
                                  f"{self.spec.describe_target()} instead")

    def dead_letter_store(self) -> DeadLetterStore:
        """Where this sink keeps rows it could not deliver (see :mod:`etl_assets.dead_letters`)."""
        return DeadLetterStore(self.setup.dead_letter_root)

    def status(self) -> str | None:
        """One line on what the target holds, for ``etl-assets status`` (None: not known)."""
        return None

    def committed_watermark(self) -> Bound | None:
        """The high watermark the target has committed (None: none yet)."""
        raise NotImplementedError(f"{self.setup.where}: kind {self.spec.kind} keeps no "
                                  f"watermark")
