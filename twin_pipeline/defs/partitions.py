"""Site × delivery partitions. Both dimensions are dynamic: the landing sensor adds a site when its
folder appears and a delivery when its `_READY` marker does."""

import dagster as dg

site_partitions = dg.DynamicPartitionsDefinition(name="site")
delivery_partitions = dg.DynamicPartitionsDefinition(name="delivery")
site_delivery_partitions = dg.MultiPartitionsDefinition({"site": site_partitions, "delivery": delivery_partitions})

# DuckDB columns holding each partition dimension (dagster-duckdb deletes/loads by these)
PARTITION_EXPR = {"site": "site_id", "delivery": "delivery_id"}
WAREHOUSE_POOL = "duckdb_warehouse"  # DuckDB allows one writer process: every writer shares this pool


def partition_keys(context) -> tuple[str, str]:
    """(site_id, delivery_id) of the running partition."""
    key = context.partition_key
    dims = key.keys_by_dimension
    return dims["site"], dims["delivery"]


def partition_key_for(site_id: str, delivery_id: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"site": site_id, "delivery": delivery_id})
