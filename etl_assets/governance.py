"""Governance settings every source and sink accepts: description, owners, tags, group, key
prefix, concurrency pool and freshness policy (and, on sources, the backfill policy), checked
by Dagster's own rules when the spec is validated, and turned into ``@asset`` arguments by
``source_asset_arguments`` and ``sink_asset_arguments``.

None of them changes the rows a partition gets: they are ``NotData`` (see
:mod:`etl_assets.code_versions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Literal, TypedDict

from dagster import AssetKey, BackfillPolicy, FreshnessPolicy
from dagster._check import CheckError
from dagster._core.definitions.op_definition import VALID_POOL_NAME_REGEX
from dagster._core.definitions.utils import has_valid_name_chars, is_valid_owner
from dagster._core.definitions.utils import validate_group_name as dagster_group_name
from dagster._core.errors import DagsterInvalidDefinitionError
from dagster._utils.tags import normalize_tags
from pydantic import Field, field_validator, model_validator

from etl_assets.code_versions import NotData
from etl_assets.settings import DURATION_PATTERN, StrictModel
from etl_assets.watermark import parse_duration

# The rules below are Dagster's own (1.13), called here so that a spec Dagster would refuse
# when the definitions are built is refused when it is validated, naming the field.


def _duration(value: str | None) -> str | None:
    if value is not None and not DURATION_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a duration like 30m, 6h, 1d")
    return value


class FreshnessSettings(StrictModel):
    """Dagster's freshness policy of an asset: either a time window (``fail_window``, optionally
    ``warn_window``: the asset is failing, or warning, when its latest materialization is older)
    or a cron deadline (``cron`` and ``lower_bound_delta``: a materialization is expected in
    the ``lower_bound_delta`` before each tick of ``cron``, in ``timezone``)."""

    fail_window: str | None = Field(
        None, description="duration (e.g. 2h; at least 1m): failing when the latest "
                          "materialization is older")
    warn_window: str | None = Field(
        None, description="duration shorter than fail_window: warning when the latest "
                          "materialization is older")
    cron: str | None = Field(None, description="deadline cron, e.g. '0 9 * * *'")
    lower_bound_delta: str | None = Field(
        None, description="duration before each cron tick in which a materialization counts "
                          "(at least 1m, at most the cron's interval)")
    timezone: str | None = Field(None, description="IANA time zone of `cron` (default UTC)")

    _durations = field_validator("fail_window", "warn_window", "lower_bound_delta")(_duration)

    @model_validator(mode="after")
    def _one_kind(self) -> FreshnessSettings:
        if bool(self.fail_window) == bool(self.cron):
            raise ValueError("give `fail_window` (and optionally `warn_window`), or `cron` and "
                             "`lower_bound_delta`")
        if self.cron and self.warn_window:
            raise ValueError("`warn_window` goes with `fail_window`, not `cron`")
        if self.fail_window and (self.lower_bound_delta or self.timezone):
            raise ValueError("`lower_bound_delta` and `timezone` go with `cron`, not "
                             "`fail_window`")
        if self.cron and not self.lower_bound_delta:
            raise ValueError("`cron` needs `lower_bound_delta`")
        try:
            self.policy()
        except CheckError as exc:
            raise ValueError(str(exc).removeprefix("Invariant failed. Description: ")) from None
        return self

    def policy(self) -> FreshnessPolicy:
        """The Dagster policy (``FreshnessPolicy.time_window`` or ``FreshnessPolicy.cron``)."""
        if self.cron:
            assert self.lower_bound_delta is not None
            return FreshnessPolicy.cron(deadline_cron=self.cron,
                                        lower_bound_delta=parse_duration(self.lower_bound_delta),
                                        timezone=self.timezone or "UTC")
        assert self.fail_window is not None
        warn: timedelta | None = parse_duration(self.warn_window) if self.warn_window else None
        return FreshnessPolicy.time_window(fail_window=parse_duration(self.fail_window),
                                           warn_window=warn)


class GovernanceSettings(StrictModel):
    """How an asset is described, owned, grouped and keyed in Dagster; every source and sink
    has these settings."""

    description: NotData[str | None] = Field(
        None, min_length=1, description="the asset's description (replaces the generated one)")
    owners: NotData[list[str]] = Field(
        default_factory=list, description="email addresses or teams as team:name")
    tags: NotData[dict[str, str]] = Field(
        default_factory=dict, description="Dagster asset tags (keys and values: letters, "
                                          "digits, _ . -, at most 63 characters; a key may "
                                          "have a namespace/)")
    group: NotData[str | None] = Field(
        None, description="asset group (letters, digits, _; segments separated by /); "
                          "default: a source's name; a sink's: its source's group")
    key_prefix: NotData[list[str]] = Field(
        default_factory=list, description="parts put before the asset's name in its key: a "
                                          "list or a string a/b (letters, digits, _); a sink "
                                          "still names its source by the source's name")
    pool: NotData[str | None] = Field(
        None, description="Dagster concurrency pool limiting how many runs execute the asset "
                          "at once (no whitespace)")
    freshness: NotData[FreshnessSettings | None] = Field(
        None, description="freshness policy: {fail_window, warn_window} or "
                          "{cron, lower_bound_delta, timezone}")

    @field_validator("owners")
    @classmethod
    def _owners(cls, value: list[str]) -> list[str]:
        wrong = [owner for owner in value if not is_valid_owner(owner)]
        if wrong:
            raise ValueError(f"{', '.join(map(repr, wrong))}: an owner is an email address or "
                             f"a team name prefixed with team: (team:finance)")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        try:
            normalize_tags(value, strict=True, allow_private_system_tags=False)
        except DagsterInvalidDefinitionError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        try:
            dagster_group_name(value)
        except DagsterInvalidDefinitionError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("key_prefix", mode="before")
    @classmethod
    def _key_prefix(cls, value: object) -> object:
        parts = value.split("/") if isinstance(value, str) else value
        if isinstance(parts, list):
            wrong = [part for part in parts if isinstance(part, str)
                     and not has_valid_name_chars(part)]
            if wrong:
                raise ValueError(f"{', '.join(map(repr, wrong))}: each part of a key prefix "
                                 f"is letters, digits and _")
        return parts

    @field_validator("pool")
    @classmethod
    def _pool(cls, value: str | None) -> str | None:
        if value is not None and not VALID_POOL_NAME_REGEX.match(value):
            raise ValueError(f"{value!r} is not a pool name: one or more characters, no "
                             f"whitespace")
        return value

    def asset_key(self, name: str) -> AssetKey:
        """The key of the asset named ``name`` (a source's or a sink's name): ``key_prefix``
        then ``name``."""
        return AssetKey([*self.key_prefix, name])


class SourceGovernance(GovernanceSettings):
    """Governance of a source, which also decides how a backfill of its windows runs (its sinks
    run with it, so they take the same policy)."""

    backfill: NotData[Literal["multi_run", "single_run"]] = Field(
        "multi_run", description="multi_run: a backfill runs each window on its own; "
                                 "single_run: a backfill of many windows runs as one run over "
                                 "them all, or runs of at most max_partitions_per_run")
    max_partitions_per_run: NotData[int | None] = Field(
        None, gt=0, description="with backfill single_run: windows per run (default: all)")

    @model_validator(mode="after")
    def _partitions_per_run(self) -> SourceGovernance:
        if self.max_partitions_per_run is not None and self.backfill != "single_run":
            raise ValueError("`max_partitions_per_run` goes with `backfill: single_run`")
        return self

    def group_name(self, name: str) -> str:
        """The group of source ``name``'s assets: ``group``, else the source's name."""
        return self.group or name

    def backfill_policy(self) -> BackfillPolicy | None:
        """The Dagster backfill policy (None: Dagster's default, a run per partition)."""
        if self.backfill == "multi_run":
            return None
        if self.max_partitions_per_run is None:
            return BackfillPolicy.single_run()
        return BackfillPolicy.multi_run(self.max_partitions_per_run)


class AssetArguments(TypedDict):
    """The ``@asset`` keyword arguments governance sets."""

    key_prefix: Sequence[str]
    description: str
    owners: Sequence[str]
    tags: dict[str, str]
    group_name: str
    pool: str | None
    freshness_policy: FreshnessPolicy | None
    backfill_policy: BackfillPolicy | None


def _arguments(settings: GovernanceSettings, source: SourceGovernance, group: str,
               description: str) -> AssetArguments:
    return AssetArguments(
        key_prefix=list(settings.key_prefix),
        description=settings.description or description,
        owners=list(settings.owners),
        tags=dict(settings.tags),
        group_name=settings.group or group,
        pool=settings.pool,
        freshness_policy=settings.freshness.policy() if settings.freshness else None,
        backfill_policy=source.backfill_policy(),
    )


def source_asset_arguments(name: str, source: SourceGovernance,
                           description: str) -> AssetArguments:
    """The governance ``@asset`` arguments of source ``name``'s asset; ``description`` is the
    generated one, used when the spec gives none."""
    return _arguments(source, source, source.group_name(name), description)


def sink_asset_arguments(sink: GovernanceSettings, source_name: str, source: SourceGovernance,
                         description: str) -> AssetArguments:
    """The governance ``@asset`` arguments of a sink's asset fed by ``source`` (named
    ``source_name``): the sink's group defaults to its source's, its backfill policy is its
    source's; ``description`` is the generated one, used when the spec gives none."""
    return _arguments(sink, source, source.group_name(source_name), description)
