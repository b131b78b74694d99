"""The root of etl_assets' errors: every error the package raises on purpose derives from
:class:`EtlAssetsError`, so a caller can tell ours (a one-line message naming the pipeline,
table, column or row at fault) from a bug's traceback."""

from __future__ import annotations


class EtlAssetsError(RuntimeError):
    """An error of etl_assets; its message is meant for the user, in one line."""


class ConfigurationError(EtlAssetsError):
    """A pipeline that cannot run as configured (an unset variable, a missing column...)."""


class TransientError(EtlAssetsError):
    """A target or source that stayed unreachable or overloaded after every retry."""
