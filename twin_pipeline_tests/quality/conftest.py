"""Fixtures for the quality-gate tests: site x delivery partitions and a tmp DuckDB warehouse."""

import dagster as dg
import pytest
from dagster._core.storage.db_io_manager import DbIOManager
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager

SITE = "site_a"
DELIVERY = "2024-01-15"
PARTITION_KEY = dg.MultiPartitionKey({"site": SITE, "delivery": DELIVERY})
PARTITION_EXPR = {"partition_expr": {"site": "site_id", "delivery": "delivery_id"}}


def site_delivery_partitions() -> dg.MultiPartitionsDefinition:
    """The pipeline's site x delivery partitioning (both dimensions dynamic)."""
    return dg.MultiPartitionsDefinition(
        {
            "site": dg.DynamicPartitionsDefinition(name="site"),
            "delivery": dg.DynamicPartitionsDefinition(name="delivery"),
        }
    )


class _PartitionLoadingDbIOManager(DbIOManager):
    """DbIOManager that enters a partition-loading context with the run's instance.

    Dagster 1.13.27's ``DbIOManager._get_table_slice`` resolves the key range of each
    MultiPartitions dimension with ``get_partition_keys_in_range`` outside any partition-loading
    context, which fails for ``DynamicPartitionsDefinition`` dimensions with "The instance is not
    available to load partitions" (see dagster-io/dagster#32631, #33815).
    """

    def handle_output(self, context, obj):
        with dg.partition_loading_context(dynamic_partitions_store=context.step_context.instance):
            return super().handle_output(context, obj)

    def load_input(self, context):
        with dg.partition_loading_context(dynamic_partitions_store=context.instance):
            return super().load_input(context)


class PartitionSafeDuckDBPandasIOManager(DuckDBPandasIOManager):
    """``DuckDBPandasIOManager`` usable with dynamic multi-partitions (see above)."""

    def create_io_manager(self, context) -> DbIOManager:
        # Same arguments as DuckDBIOManager.create_io_manager, with the patched class.
        return _PartitionLoadingDbIOManager(
            db_client=DuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="DuckDBIOManager",
        )


@pytest.fixture
def partitioned_instance():
    """Ephemeral instance with the test site and delivery registered as dynamic partitions."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("site", [SITE])
    instance.add_dynamic_partitions("delivery", [DELIVERY])
    return instance


@pytest.fixture
def duckdb_path(tmp_path):
    return str(tmp_path / "w.duckdb")
