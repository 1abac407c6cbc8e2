"""Take sequences out: deregister their partition and delete their store, so segments stop reading them."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DagsterInstance

from pipelines.partitions import sequences_partitions
from storage.layout import validate_sequence_key
from storage.sequence_store import SequenceStore


class UnknownSequence(KeyError):
    """A key that is neither a registered partition nor a stored sequence."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Removal:
    key: str
    partition: bool  # a registered partition was deleted
    store: bool  # a store group was deleted

    def describe(self) -> str:
        parts = [name for name, done in (("partition", self.partition), ("store", self.store)) if done]
        return f"{self.key} ({' + '.join(parts) or 'nothing left'})"


def known_sequences(instance: DagsterInstance, store: SequenceStore) -> set[str]:
    """Keys the pipeline knows: registered partitions and sequences with a store group."""
    return set(instance.get_dynamic_partitions(sequences_partitions.name)) | set(store.sequences_with())


def missing_sequences(instance: DagsterInstance, store: SequenceStore, present: set[str]) -> list[str]:
    """Known keys whose folder is gone from the data root, sorted."""
    return sorted(known_sequences(instance, store) - present)


def remove_sequence(instance: DagsterInstance, store: SequenceStore, key: str) -> Removal:
    """Deregister one sequence's partition and delete its store group (either may already be gone)."""
    validate_sequence_key(key)
    registered = instance.has_dynamic_partition(sequences_partitions.name, key)
    stored = store.group_path(key).exists()
    if not registered and not stored:
        raise UnknownSequence(
            f"no sequence {key!r}: it is neither a registered partition nor stored under {str(store.sequences_dir)!r}"
        )
    # Store first: a partition without data re-ingests; data without a partition would be read by segments.
    removed_store = store.remove(key)
    if registered:
        instance.delete_dynamic_partition(sequences_partitions.name, key)
    return Removal(key, registered, removed_store)


def prune(instance: DagsterInstance, store: SequenceStore, present: set[str]) -> list[Removal]:
    """Remove every known sequence whose folder is gone.

    Refuses when the data root holds no sequence at all while some are known: that is more likely
    an unmounted or mistyped root than a dataset deleted on purpose (`facetalk remove KEY` then)."""
    missing = missing_sequences(instance, store, present)
    if missing and not present:
        raise FileNotFoundError(
            f"refusing to prune all {len(missing)} known sequences: the data root has no sequence folder "
            "(unmounted?); remove them one by one with `facetalk remove KEY` if that is intended"
        )
    return [remove_sequence(instance, store, key) for key in missing]
