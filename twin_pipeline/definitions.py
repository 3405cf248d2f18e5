"""The single Dagster entry point (`dagster dev` finds it through pyproject's [tool.dagster])."""

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    from twin_pipeline.defs.build import build_definitions

    return build_definitions()
