"""The warehouse IO manager: dagster-duckdb's pandas IO manager, made safe for dynamic partitions.

dagster-duckdb 0.29 resolves a multi-partition key range per dimension without an instance in
scope, which fails for dynamic dimensions ("The instance is not available to load partitions").
This wrapper runs the stock `DbIOManager` inside `partition_loading_context` bound to the run's
instance; storage behaviour is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from dagster import MetadataValue, TableColumn, TableSchema, partition_loading_context
from dagster._core.definitions.metadata import TableMetadataSet
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager, DuckDBPandasTypeHandler


def storable(df: pd.DataFrame) -> pd.DataFrame:
    """Give all-null object columns a string dtype so DuckDB does not type them as NULL."""
    out = df
    for col in df.columns:
        if df[col].dtype == object and df[col].isna().all():
            if out is df:
                out = df.copy()
            out[col] = out[col].astype("string")
    return out


class WarehousePandasTypeHandler(DuckDBPandasTypeHandler):
    """Like dagster-duckdb-pandas, but an empty frame still creates its (typed, empty) table, rows are
    inserted by column name rather than position, and new columns are added to an existing table."""

    def handle_output(self, context, table_slice, obj: pd.DataFrame, connection):
        obj = storable(obj)  # noqa: F841 - referenced by name in the SQL (DuckDB replacement scan)
        table = f"{table_slice.schema}.{table_slice.table}"
        connection.execute(f"create table if not exists {table} as select * from obj limit 0")
        # schema evolution: a column the code added since the table was created is added (older rows get
        # NULL); columns the frame lacks stay and are NULL for the new rows
        # NULL); a column that now carries text (e.g. a quality flag first stored as all-NaN DOUBLE) is widened
        # to VARCHAR so older rows keep their values as text
        have = {r[0]: r[1] for r in connection.execute(f"describe {table}").fetchall()}
        for name, col_type, *_ in connection.execute("describe select * from obj limit 0").fetchall():
            if name not in have:
                connection.execute(f'alter table {table} add column "{name}" {col_type}')
            elif col_type == "VARCHAR" and have[name] != "VARCHAR":
                connection.execute(f'alter table {table} alter column "{name}" type VARCHAR')
        if not obj.empty:
            connection.execute(f"insert into {table} by name select * from obj")
        row_count = int(obj.shape[0])
        context.add_output_metadata(
            {
                **(
                    TableMetadataSet(partition_row_count=row_count, storage_kind="duckdb")
                    if context.has_partition_key
                    else TableMetadataSet(row_count=row_count, storage_kind="duckdb")
                ),
                "dataframe_columns": MetadataValue.table_schema(
                    TableSchema(columns=[TableColumn(name=str(n), type=str(t)) for n, t in obj.dtypes.items()])
                ),
            }
        )


class _InstanceScopedDbIOManager(DbIOManager):
    def handle_output(self, context, obj):
        with partition_loading_context(dynamic_partitions_store=context.step_context.instance):
            return super().handle_output(context, obj)

    def load_input(self, context):
        with partition_loading_context(dynamic_partitions_store=context.instance):
            return super().load_input(context)


class WarehouseIOManager(DuckDBPandasIOManager):
    """Stores pandas DataFrames as DuckDB tables `<layer>.<asset>`; partitions by `partition_expr`."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [WarehousePandasTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return _InstanceScopedDbIOManager(
            db_client=DuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="WarehouseIOManager",
        )
