"""The data pipeline: ingest (readers, schemas), transforms, stored datasets with lineage."""
