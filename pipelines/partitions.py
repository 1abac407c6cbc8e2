from dagster import DynamicPartitionsDefinition

# One key per sequence folder `<IDName>_<SequenceName>`, registered by the sensor or `facetalk ingest`.
sequences_partitions = DynamicPartitionsDefinition(name="sequences")
