"""A demo job that changes the sample source, so the watermark sensor has new rows to find."""


from dagster import Definitions, OpExecutionContext, job, op

from etl_assets.connections import resolve_url
from etl_assets.demo.sample_source import add_sample_changes
from etl_assets.sources.sql.spec import SqlSourceSpec
from etl_assets.spec_in_use import load_pipeline_spec


@op(description="Updates 20 sensors and adds 5 in the demo's source database.")
def change_demo_sensors(context: OpExecutionContext) -> int:
    source = load_pipeline_spec().sources["sensors"]
    assert isinstance(source, SqlSourceSpec)  # the demo spec's
    changed = add_sample_changes(resolve_url(source.connection, "source 'sensors'"))
    context.log.info(f"changed {changed} rows in the demo source; the sensor picks them up")
    return changed


@job(description="Change rows in the demo source database (then watch the sensor).")
def demo_change_source() -> None:
    change_demo_sensors()


def demo_definitions() -> Definitions:
    return Definitions(jobs=[demo_change_source])
