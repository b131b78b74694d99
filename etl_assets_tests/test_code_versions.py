"""Code versions change with what changes a partition's rows, and only with that."""

import copy
import importlib
import sys
from pathlib import Path

import pytest

from etl_assets.code_versions import changes_data, sink_code_version, source_code_version
from etl_assets.sinks.registry import SINK_KINDS
from etl_assets.sources.registry import SOURCE_KINDS
from etl_assets.spec import PipelineSpec, parse_spec
from etl_assets.transforms import load_transform

SPEC = {
    "sources": {"readings": {
        "connection": {"env": "SOURCE_URL"}, "table": "s.readings", "cursor": "updated_at",
        "primary_key": ["id"]}},
    "sinks": {
        "pg": {"source": "readings", "kind": "postgres", "connection": {"env": "PG_URL"},
               "table": "t.readings"},
        "files": {"source": "readings", "kind": "parquet", "path": "/data/readings"},
        "bq": {"source": "readings", "kind": "bigquery", "project": "p", "dataset": "d",
               "table": "readings", "primary_key": ["id"]},
        "api": {"source": "readings", "kind": "http", "url": "http://api/readings/{id}"},
    },
}
ALL = {"readings", "pg", "files", "bq", "api"}


def versions(data: dict) -> dict[str, str]:
    spec: PipelineSpec = parse_spec(data)
    found = {name: source_code_version(source) for name, source in spec.sources.items()}
    for name, sink in spec.sinks.items():
        transform = load_transform(sink.transform, name) if sink.transform else None
        found[name] = sink_code_version(spec.sink_setup(name), transform)
    return found


def changed(where: str, **settings: object) -> set[str]:
    """The assets whose version changes when ``settings`` are set on ``where``."""
    after = copy.deepcopy(SPEC)
    section, name = where.split(".")
    after[section][name].update(settings)
    before, now = versions(SPEC), versions(after)
    return {asset for asset in before if before[asset] != now[asset]}


@pytest.mark.parametrize(("where", "settings"), [
    ("sources.readings", {"sensor_interval_seconds": 5, "sensor_running": True}),
    ("sources.readings", {"chunk_rows": 10}),
    ("sources.readings", {"retries": 9, "retry_delay_s": 0.1, "max_retry_delay_s": 1}),
    ("sources.readings", {"lookback": "10m", "max_window": "2h", "min_window": "5m",
                          "max_delay": "2h", "start": "2024-01-01"}),
    ("sources.readings", {"owners": ["team:data"], "tags": {"tier": "gold"}, "group": "g",
                          "description": "d", "key_prefix": "a/b", "pool": "p",
                          "freshness": {"fail_window": "1h"}, "backfill": "single_run",
                          "max_partitions_per_run": 4}),
    ("sinks.pg", {"retries": 0, "retry_delay_s": 9, "terminate_blockers_after_s": 5,
                  "owners": ["a@example.com"], "pool": "pg", "group": "other"}),
    ("sinks.files", {"retries": 0, "freshness": {"cron": "0 9 * * *",
                                                 "lower_bound_delta": "1h"}}),
    ("sinks.bq", {"chunk_rows": 10, "request_timeout_s": 5, "credentials_env": "GCP_KEY"}),
    ("sinks.api", {"concurrency": 2, "bulk_docs": 10, "timeout_s": 1, "on_error": "dead_letter",
                   "ca_file": "/etc/ca.pem", "tags": {"team": "web"}}),
], ids=lambda v: ",".join(v) if isinstance(v, dict) else v)
def test_settings_that_do_not_change_the_rows_keep_every_version(where: str,
                                                                 settings: dict) -> None:
    assert changed(where, **settings) == set()


@pytest.mark.parametrize(("where", "settings", "expected"), [
    ("sources.readings", {"table": "s.other"}, {"readings"}),
    ("sources.readings", {"schema": "s2", "table": "readings"}, {"readings"}),
    ("sources.readings", {"cursor": "created_at"}, ALL),  # the sinks compare it (newest wins)
    ("sources.readings", {"table": None, "query": "SELECT * FROM r WHERE u > :lo AND u <= :hi",
                          "cursor_type": "timestamp"}, {"readings"}),
    ("sources.readings", {"connection": {"env": "OTHER_URL"}}, {"readings"}),
    # The staged rows stay; the sinks that write by the source's key change.
    ("sources.readings", {"primary_key": ["id", "site"]}, {"pg", "files", "api"}),
    ("sinks.pg", {"table": "t.other"}, {"pg"}),
    ("sinks.pg", {"delete": "all"}, {"pg"}),
    ("sinks.pg", {"conflict": "last_write"}, {"pg"}),
    ("sinks.pg", {"primary_key": [], "without_key": "append"}, {"pg"}),
    ("sinks.pg", {"transform": "etl_assets_tests.transforms_for_tests:shout_codes"}, {"pg"}),
    ("sinks.files", {"mode": "update"}, {"files"}),
    ("sinks.files", {"format": "csv"}, {"files"}),
    ("sinks.files", {"path": "/data/other"}, {"files"}),
    ("sinks.bq", {"write": "merge"}, {"bq"}),
    ("sinks.bq", {"cursor_column": "changed_at"}, {"bq"}),
    ("sinks.api", {"url": "http://api/other/{id}"}, {"api"}),
    ("sinks.api", {"couchdb_revisions": True}, {"api"}),
], ids=lambda v: ",".join(v) if isinstance(v, dict) else None)
def test_settings_that_change_the_rows_change_their_assets_version(where: str, settings: dict,
                                                                   expected: set[str]) -> None:
    assert changed(where, **settings) == expected


TRANSFORMS = '''
def clean(batch):
    return trimmed(batch)


def trimmed(batch):
    return batch.slice({start})


def unrelated(batch):
    return {unrelated}
'''


def test_a_transform_helper_changes_the_sink_version(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    setup = parse_spec(SPEC).sink_setup("pg")
    found = []
    for number, (start, unrelated) in enumerate([(0, "batch"), (0, "None"), (1, "batch")]):
        name = f"versioned_transforms_{number}"
        (tmp_path / f"{name}.py").write_text(TRANSFORMS.format(start=start, unrelated=unrelated))
        monkeypatch.setitem(sys.modules, name, importlib.import_module(name))
        found.append(sink_code_version(setup, sys.modules[name].clean))
    assert found[0] == found[1]  # an unrelated function of the module was edited
    assert found[0] != found[2]  # the helper the transform calls was edited


MODELS = [kind.spec for kind in (*SOURCE_KINDS.values(), *SINK_KINDS.values())]


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_a_redeclared_setting_keeps_whether_it_changes_the_data(model: type) -> None:
    """A kind that redeclares a base's setting (its own default) must mark it alike."""
    for base in model.__mro__[1:]:
        for field in getattr(base, "model_fields", {}):
            assert changes_data(model, field) == changes_data(base, field), (base, field)
