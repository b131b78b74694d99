"""Servers started for the tests and bench/, each on a free loopback port: a BigQuery API
(bqemulator), S3 (moto), CouchDB (pouchdb-server), datasette, a fault-injecting HTTP server,
a private PostgreSQL that can be restarted and the embedded PostgreSQL."""
