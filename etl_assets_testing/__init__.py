"""What the tests and the benchmarks share: the servers they start on loopback
(``etl_assets_testing.servers``). Plain functions and classes, no pytest; not in the wheel."""
