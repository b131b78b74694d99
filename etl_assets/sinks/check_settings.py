"""What the ``checks:`` of a sink ask for (the checks: :mod:`etl_assets.asset_checks`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from etl_assets.settings import Step, StrictModel, check_step


class CheckSettings(StrictModel):
    """Which checks a sink's asset runs after each write (``checks:`` of a sink)."""

    row_count: bool = Field(
        True, description="reconcile each window's rows with the target (sinks that can count)"
    )
    schema_drift: bool = Field(
        True, description="warn when the target lacks a column the sink was given"
    )
    max_watermark_lag: Step | None = Field(
        None, description="warn when the source's newest cursor value is further ahead of the "
                          "newest window the sink holds (a duration, or ids for an integer "
                          "cursor); no lag check when unset"
    )
    blocking: bool = Field(
        False, description="a failed row-count reconciliation fails the run"
    )

    _lag = field_validator("max_watermark_lag")(check_step)
