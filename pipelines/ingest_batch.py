"""The daemon's ingestion route: ONE run ingests a batch of new sequences through `facetalk ingest`'s pool.

`sequence_folder_sensor` requests one run of `ingest_new_sequences` per tick, its config listing
the new partition keys. Its one op skips the unchanged sequences and runs `ingest_sequence` for
the others through `pipelines.ingest_pool` (the code `facetalk ingest` runs): every partition is
still a real run of `ingest_sequence` in the instance (the UI lists them under that job's name,
tagged with this batch's run id), executed in-process by the pool's lanes, each lane loading the
audio encoder once. A run per partition instead would be a fresh process per sequence, each
re-importing torch and reloading the encoder: more than the ingest itself costs.
"""

import os
from typing import Any

from dagster import Config, Failure, MetadataValue, Nothing, OpExecutionContext, Out, Output, in_process_executor, op
from dagster import job as dagster_job

from pipelines.instance_config import BATCH_LANES_TAG
from pipelines.resources import AudioEncoderResource, DatasetResource, StoreResource

JOB_NAME = "ingest_new_sequences"
OP_NAME = "ingest_batch"  # the job's one op (a graph and its op may not share a name)
BATCH_TAG = "facetalk/ingest_batch"  # on each `ingest_sequence` run: the batch run that ran it


class IngestBatchConfig(Config):
    keys: list[str]  # the sequence partitions to ingest (registered already, by the sensor)
    workers: int = 0  # sequences at once; 0: the cores this run may use
    # The per-sequence run config, as `facetalk ingest -c` takes it (configs/ingest_sequence.yaml):
    # e.g. {"ops": {"nphm_meshes": {"config": {"mode": "copy"}}}}. Checked before any run.
    sequence_run_config: dict[str, Any] | None = None
    # As `facetalk ingest --allow-random-encoder`: real data with the demo encoder (see settings.random_encoder_refusal).
    allow_random_encoder: bool = False


@op(
    name=OP_NAME,
    out=Out(Nothing),
    description="Ingest the listed sequences (one `ingest_sequence` run each, `workers` at a time); "
    "unchanged ones are skipped; fails at the end when any failed, with the table.",
)
def ingest_new_sequences_op(
    context: OpExecutionContext,
    config: IngestBatchConfig,
    dataset: DatasetResource,
    store: StoreResource,
    audio_encoder: AudioEncoderResource,
):
    from pathlib import Path

    from pipelines.ingest_report import outcome_markdown
    from pipelines.runner import IngestSummary, ingest_folders, ingest_run_config, require_writable_store
    from pipelines.settings import default_encoder_path, random_encoder_refusal
    from storage.layout import InvalidSequenceName, SequenceNotFound

    root = dataset.path
    chosen = audio_encoder.path if Path(audio_encoder.path).expanduser() != default_encoder_path() else None
    if not config.allow_random_encoder and (refusal := random_encoder_refusal(root, chosen)):
        raise Failure(description=f"{refusal} (in this job's config: allow_random_encoder: true)")
    require_writable_store(store.path)
    run_config = ingest_run_config(config.sequence_run_config or None)  # a bad config fails here, naming the problem
    folders, skipped = [], []
    for key in dict.fromkeys(config.keys):
        try:
            folders.append(dataset.sequence(key))
        except (InvalidSequenceName, SequenceNotFound) as error:  # removed since the tick: the sensor deregisters it
            skipped.append((key, str(error)))
            context.log.warning(f"{key}: skipped: {error}")
    workers = config.workers or len(os.sched_getaffinity(0))
    context.log.info(f"{len(folders)} sequences under {root}, {workers} at a time")
    summary = IngestSummary()
    ingest_folders(
        context.instance, {"dataset": dataset, "store": store, "audio_encoder": audio_encoder}, root, folders,
        summary, context.log.info, workers, run_config, tags={BATCH_TAG: context.run_id},
    )  # fmt: skip
    counts = {status: sum(o.status == status for o in summary.outcomes) for status in ("ok", "unchanged", "failed")}
    metadata = {
        "sequences": MetadataValue.md(outcome_markdown(summary.outcomes, skipped)),
        **{name: MetadataValue.int(n) for name, n in counts.items()},
        "skipped": MetadataValue.int(len(skipped)),
    }
    if summary.failed:
        raise Failure(
            description=f"{len(summary.failed)} of {len(folders)} sequences failed ({', '.join(summary.failed)}); "
            f"the other {len(folders) - len(summary.failed)} were ingested",
            metadata=metadata,
        )
    yield Output(None, metadata=metadata)


@dagster_job(
    name=JOB_NAME,
    description="Ingest a batch of sequences (what `sequence_folder_sensor` requests once per tick): "
    "one `ingest_sequence` run per sequence, in this run's process and its worker processes.",
    executor_def=in_process_executor,  # one op; a step process would only re-import torch
    tags={BATCH_LANES_TAG: "all-cores"},  # the instance's run queue starts one such run at a time
)
def ingest_new_sequences_job():
    ingest_new_sequences_op()
