"""Training data from the segment store: a torch Dataset with batched reads, and a LightningDataModule.

Small stores (the common case: 48-frame windows of a few hours of speech) are read into RAM once;
larger ones are read batch by batch, each DataLoader worker opening its own reader (a reader is
never shared across fork). For the FLAME variant, the vertex offsets are projected on the PCA basis
once while preparing, so training reads K numbers per frame instead of V * 3.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from models.config import ExperimentConfig
from models.motion_codec import fit_pca_basis
from storage.location import StorePath, store_path
from storage.segments import SegmentReader, SegmentStoreError

log = logging.getLogger(__name__)

READ_BLOCK_BYTES = 256 * 2**20  # per read while preparing (a FLAME segment is ~3 MB)


def motion_field(config: ExperimentConfig) -> str:
    return "flame_offsets" if config.data.variant == "flame" else "expression"


@dataclass(frozen=True)
class StoreSummary:
    path: StorePath
    n_train: int
    n_val: int
    segment_frames: int
    fps: int
    audio_dim: int
    motion_field: str
    motion_shape: tuple[int, ...]  # one frame: (200,) or (V, 3)


def open_reader(segments_dir: str | Path | StorePath) -> SegmentReader:
    """A reader on a local directory or an fsspec URL (s3://...)."""
    path = store_path(segments_dir)
    if not path.exists():
        raise SegmentStoreError(f"segment store {str(path)!r} does not exist")
    return SegmentReader(path)


def inspect_store(reader: SegmentReader, config: ExperimentConfig) -> StoreSummary:
    """Check that the store can train this config; every problem names the store and the field."""
    where = str(reader.path)
    field = motion_field(config)
    for needed in (field, "audio_features"):
        if needed not in reader.fields:
            hint = " (the store was built without FLAME tracking)" if needed == "flame_offsets" else ""
            raise SegmentStoreError(f"segment store {where!r} has no {needed!r} array{hint}; it has {reader.fields}")
    n_train, n_val = len(reader.indices("train")), len(reader.indices("val"))
    if len(reader) == 0:
        raise SegmentStoreError(f"segment store {where!r} is empty (0 segments)")
    if n_train < config.train.batch_size:
        raise SegmentStoreError(
            f"segment store {where!r} has {n_train} train segments, fewer than one batch "
            f"(train.batch_size = {config.train.batch_size}); add data or lower the batch size"
        )
    if n_val == 0:
        raise SegmentStoreError(
            f"segment store {where!r} has no 'val' segments; at least one identity must be in the val split"
        )
    motion = reader.group[field]
    audio = reader.group["audio_features"]
    if audio.shape[-1] != config.model.audio_dim:
        raise SegmentStoreError(
            f"segment store {where!r}: audio_features are {audio.shape[-1]}-d, config model.audio_dim is {config.model.audio_dim}"
        )
    if field == "expression" and motion.shape[-1] != config.model.motion_dim:
        raise SegmentStoreError(
            f"segment store {where!r}: expression codes are {motion.shape[-1]}-d, config model.motion_dim is {config.model.motion_dim}"
        )
    if motion.shape[1] != audio.shape[1]:
        raise SegmentStoreError(
            f"segment store {where!r}: {field} has {motion.shape[1]} frames per segment, audio_features {audio.shape[1]}"
        )
    return StoreSummary(
        path=reader.path,
        n_train=n_train,
        n_val=n_val,
        segment_frames=int(motion.shape[1]),
        fps=int(reader.attrs["fps"]),
        audio_dim=int(audio.shape[-1]),
        motion_field=field,
        motion_shape=tuple(int(s) for s in motion.shape[2:]),
    )


def _already_batched(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch


class SegmentDataset(Dataset):
    """Segments of one split -> {"motion": [B, L, D], "audio": [B, L, A]} per batch.

    `motion`/`audio` hold the split's arrays when preloaded; otherwise (None) rows are read from
    the store on demand. Motion here is raw (un-normalised) expression codes or PCA codes.
    """

    def __init__(
        self,
        segments_dir: str | Path | StorePath,
        indices: np.ndarray,
        motion: np.ndarray | None = None,
        audio: np.ndarray | None = None,
        field: str = "expression",
    ):
        self.segments_dir = store_path(segments_dir)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.motion, self.audio, self.field = motion, audio, field
        self._reader: SegmentReader | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reader": None}  # each worker opens its own

    def _read(self, name: str, preloaded: np.ndarray | None, positions: np.ndarray) -> np.ndarray:
        if preloaded is not None:
            return preloaded[positions]
        if self._reader is None:
            self._reader = SegmentReader(self.segments_dir)
        return self._reader.read(name, self.indices[positions])

    def __getitems__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        positions = np.asarray(positions, dtype=np.int64)
        return {
            "motion": torch.from_numpy(
                np.ascontiguousarray(self._read(self.field, self.motion, positions), dtype=np.float32)
            ),
            "audio": torch.from_numpy(
                np.ascontiguousarray(self._read("audio_features", self.audio, positions), dtype=np.float32)
            ),
        }

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([position]).items()}


def _read_blocks(reader: SegmentReader, field: str, indices: np.ndarray, transform=None) -> np.ndarray:
    array = reader.group[field]
    segment_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:]))
    step = max(1, READ_BLOCK_BYTES // max(segment_bytes, 1))
    blocks = []
    for start in range(0, len(indices), step):
        block = reader.read(field, indices[start : start + step])
        blocks.append(transform(block) if transform else block)
    return np.concatenate(blocks)


class SegmentDataModule(L.LightningDataModule):
    """Call `prepare()` once before building the model: it checks the store and computes the
    normalisation statistics (and, for FLAME, the PCA basis) that the model stores."""

    def __init__(self, segments_dir: str | Path | StorePath, config: ExperimentConfig):
        super().__init__()
        self.segments_dir = store_path(segments_dir)
        self.config = config
        self.summary: StoreSummary | None = None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.basis: np.ndarray | None = None  # [K, V*3], FLAME only
        self.pca_energy: np.ndarray | None = None
        self._train: SegmentDataset | None = None
        self._val: SegmentDataset | None = None
        self._preloaded = False

    def prepare(self) -> StoreSummary:
        reader = open_reader(self.segments_dir)
        summary = self.summary = inspect_store(reader, self.config)
        train_idx, val_idx = reader.indices("train"), reader.indices("val")
        # FLAME motion is kept as PCA codes (K per frame), expression codes as they are.
        motion_floats = (
            self.config.model.motion_dim
            if summary.motion_field == "flame_offsets"
            else int(np.prod(summary.motion_shape))
        )
        frame_bytes = 4 * (motion_floats + summary.audio_dim)
        total_mb = frame_bytes * summary.segment_frames * (len(train_idx) + len(val_idx)) / 2**20
        self._preloaded = total_mb <= self.config.data.preload_max_mb

        motion_train = motion_val = None
        if summary.motion_field == "flame_offsets":
            self.basis, self.pca_energy = self._fit_pca(reader, train_idx)
            basis = torch.from_numpy(self.basis)
            project = lambda block: (torch.from_numpy(block).flatten(-2) @ basis.T).numpy()
            motion_train = _read_blocks(reader, summary.motion_field, train_idx, project)
            motion_val = _read_blocks(reader, summary.motion_field, val_idx, project)
            log.info(
                "FLAME PCA: %d components keep %.4f of the offset energy", len(self.basis), float(self.pca_energy.sum())
            )
        elif self._preloaded:
            motion_train = _read_blocks(reader, summary.motion_field, train_idx)
            motion_val = _read_blocks(reader, summary.motion_field, val_idx)

        audio_train = _read_blocks(reader, "audio_features", train_idx) if self._preloaded else None
        audio_val = _read_blocks(reader, "audio_features", val_idx) if self._preloaded else None
        stats_source = (
            motion_train
            if motion_train is not None
            else reader.read(summary.motion_field, self._stats_sample(train_idx))
        )
        flat = stats_source.reshape(-1, stats_source.shape[-1]).astype(np.float64)
        self.mean, self.std = flat.mean(0).astype(np.float32), flat.std(0).astype(np.float32)

        self._train = SegmentDataset(self.segments_dir, train_idx, motion_train, audio_train, summary.motion_field)
        self._val = SegmentDataset(self.segments_dir, val_idx, motion_val, audio_val, summary.motion_field)
        return summary

    def _stats_sample(self, train_idx: np.ndarray, max_segments: int = 2048) -> np.ndarray:
        rng = np.random.default_rng(self.config.train.seed)
        return np.sort(rng.choice(train_idx, size=min(max_segments, len(train_idx)), replace=False))

    def _fit_pca(self, reader: SegmentReader, train_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k, budget = self.config.data.pca_components, self.config.data.pca_fit_frames
        frames_per_segment = self.summary.segment_frames
        rng = np.random.default_rng(self.config.train.seed)
        n_segments = min(len(train_idx), max(1, -(-budget // frames_per_segment)))
        chosen = np.sort(rng.choice(train_idx, size=n_segments, replace=False))
        frames = _read_blocks(reader, "flame_offsets", chosen).reshape(-1, int(np.prod(self.summary.motion_shape)))
        if len(frames) > budget:
            frames = frames[np.sort(rng.choice(len(frames), size=budget, replace=False))]
        try:
            basis, energy = fit_pca_basis(torch.from_numpy(frames), k, seed=self.config.train.seed)
        except ValueError as err:
            raise SegmentStoreError(f"segment store {str(self.segments_dir)!r}: {err}") from err
        return basis.numpy(), energy.numpy()

    @property
    def train_dataset(self) -> SegmentDataset | None:
        return self._train

    @property
    def val_dataset(self) -> SegmentDataset | None:
        return self._val

    @property
    def preloaded(self) -> bool:
        return self._preloaded

    @property
    def n_vertices(self) -> int | None:
        return self.summary.motion_shape[0] if self.summary and self.summary.motion_field == "flame_offsets" else None

    def _loader(self, dataset: SegmentDataset, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("SegmentDataModule.prepare() must run before the dataloaders are built")
        # Preloaded arrays make a batch a memory gather: worker processes would only add IPC.
        workers = 0 if self._preloaded else self.config.train.num_workers
        generator = torch.Generator().manual_seed(self.config.train.seed)
        return DataLoader(
            dataset,
            batch_size=self.config.train.batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=_already_batched,
            generator=generator if train else None,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._val, train=False)
