"""The root of etl_assets' errors: every error the package raises on purpose derives from
:class:`EtlAssetsError`, so a caller can tell ours (a one-line message naming the pipeline,
table, column or row at fault) from a bug's traceback.

The tree, by what to do about an error::

    EtlAssetsError (RuntimeError)
    ├── ConfigurationError   fix the spec or the environment, then run again
    │   ├── SpecError                  (also ValueError) a spec that does not validate
    │   ├── UnresolvedConnection       an unset variable, a bad URL
    │   ├── TableNameError             (also ValueError) a table name that cannot be read
    │   ├── TransformError             (also ImportError) a reference to no callable or table
    │   ├── BigQuerySinkError          a BigQuery sink that cannot run as configured
    │   └── EmbeddedPostgresError      the embedded server cannot start (says what to do)
    ├── TransientError       a source or target unreachable or overloaded: retried by
    │                        RetryPolicy, raised once every retry failed; worth another run
    ├── DataError            terminal: rows or values the target or format refuses; the row,
    │   │                    value, column or file at fault is named; another attempt fails
    │   ├── UnsupportedType            (also TypeError) no PostgreSQL type for an Arrow type
    │   ├── UnsupportedBigQueryType    (also TypeError) no BigQuery type for an Arrow type
    │   ├── FileFormatError            (also ValueError) data a file format cannot hold
    │   └── MergeKeyError              (also ValueError) keys an update merge cannot compare
    └── a component's own error, any of the kinds above but transient (the message says which):
        SourceError, ReaderError (a fast reader's), StagingError, PostgresSinkError,
        FileSinkError, HttpSinkError,
        BigQueryLoadFailed (``transient`` says whether its rows are worth a later replay),
        MaskedError (stands in for an exception whose text held a secret)

:func:`etl_assets.retries.is_transient` is True for a :class:`TransientError` and False for
every other error of ours. The builtin second bases keep older ``except ValueError`` (etc.)
callers working.
"""

from __future__ import annotations


class EtlAssetsError(RuntimeError):
    """An error of etl_assets; its message is meant for the user, in one line."""


class ConfigurationError(EtlAssetsError):
    """A pipeline that cannot run as configured (an unset variable, a missing column...):
    fix the spec or the environment and run again."""


class TransientError(EtlAssetsError):
    """A target or source that stayed unreachable or overloaded after every retry."""


class DataError(EtlAssetsError):
    """Rows or values the target or the file format refuses (terminal: another attempt fails
    the same way); the message names the row, value, column or file at fault."""
