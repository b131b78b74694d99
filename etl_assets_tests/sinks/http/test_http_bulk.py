"""Per-document results read from bulk answers, in the shapes Elasticsearch/OpenSearch
``_bulk``, CouchDB ``_bulk_docs`` and datasette's insert API give them."""

from __future__ import annotations

import json

from etl_assets.sinks.http.bulk import RequestShape
from etl_assets.sinks.http.client import Answer


def _ndjson() -> RequestShape:
    return RequestShape("ndjson_bulk", "http://127.0.0.1:9200/_bulk")


def test_an_elasticsearch_answer_without_errors_says_every_document_went_through() -> None:
    items = [{"index": {"_id": str(i), "status": 201, "result": "created"}} for i in range(3)]
    answer = Answer(200, json.dumps({"took": 4, "errors": False, "items": items}))

    results = _ndjson().results(answer, 3)

    assert [(r.ok, r.status) for r in results] == [(True, 200)] * 3


def test_an_elasticsearch_answer_with_errors_is_read_item_by_item() -> None:
    items = [{"index": {"_id": "1", "status": 201}},
             {"index": {"_id": "2", "status": 429, "error": {"type": "es_rejected_execution"}}},
             {"index": {"_id": "3", "status": 400, "error": {"type": "mapper_parsing"}}},
             {"index": {"_id": "4", "status": 409, "error": {"type": "version_conflict"}}}]
    answer = Answer(200, json.dumps({"took": 4, "errors": True, "items": items}))

    results = _ndjson().results(answer, 4)

    assert [r.ok for r in results] == [True, False, False, False]
    assert [r.status for r in results[1:]] == [429, 400, 409]
    assert results[1].retryable and not results[2].retryable
    assert results[3].conflict
    assert "mapper_parsing" in results[2].answer


def test_an_answer_without_one_item_per_document_fails_them_all_with_the_answer() -> None:
    answer = Answer(200, json.dumps({"errors": True, "items": [{"index": {"status": 201}}]}))

    results = _ndjson().results(answer, 2)

    assert [r.ok for r in results] == [False, False]
    assert "one item per document" in results[0].answer


def test_a_refused_bulk_request_fails_each_of_its_documents_with_the_status() -> None:
    results = _ndjson().results(Answer(413, "request entity too large"), 2)

    assert [(r.ok, r.status, r.answer) for r in results] == [
        (False, 413, "request entity too large")] * 2


def test_a_couchdb_answer_marks_the_conflicting_document() -> None:
    shape = RequestShape("json_array_bulk", "http://127.0.0.1:5984/db/_bulk_docs", wrap="docs")
    answer = Answer(201, json.dumps([
        {"ok": True, "id": "1", "rev": "1-a"},
        {"id": "2", "error": "conflict", "reason": "Document update conflict."}]))

    first, second = shape.results(answer, 2)

    assert first.ok and not second.ok and second.conflict


def test_a_datasette_answer_covers_every_row() -> None:
    shape = RequestShape("json_array_bulk", "http://127.0.0.1:8001/db/t/-/insert", wrap="rows")

    assert all(r.ok for r in shape.results(Answer(201, '{"ok": true}'), 3))
    refused = shape.results(Answer(200, '{"ok": false, "errors": ["no such column"]}'), 2)
    assert [r.ok for r in refused] == [False, False] and "no such column" in refused[0].answer
