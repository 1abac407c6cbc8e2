"""Training data from the segment store: a torch Dataset with batched reads, and a LightningDataModule.

A segment is a slice of the store's frame arrays. When those fit `data.preload_max_mb`, one reader
keeps them in RAM; when they also fit `train.device_data_fraction` of the training device's memory,
they are copied onto the device once and batches are gathered there (`models.device_data`: no
DataLoader, no per-step copies; on a CPU the device is host RAM). Otherwise batches stream through
a DataLoader (pinned memory and prefetching on CUDA); larger stores are read batch by batch, each
DataLoader worker opening its own reader (a reader is never shared across fork). For the FLAME
variant, every stored FLAME frame is projected on the PCA basis once while preparing, so training
reads K numbers per frame instead of V * 3, and only segments with FLAME are used.
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
from models.device_data import DeviceBatches, DeviceFrames, device_memory_bytes
from models.motion_codec import fit_pca_basis
from storage.location import StorePath, store_path
from storage.segments import DEFAULT_CACHE_BYTES, SegmentReader, SegmentStoreError

log = logging.getLogger(__name__)

READ_BLOCK_BYTES = 256 * 2**20  # per read while preparing (a FLAME frame is ~60 KB)


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


def open_reader(segments_dir: str | Path | StorePath, cache_bytes: int = DEFAULT_CACHE_BYTES) -> SegmentReader:
    """A reader on a local directory or an fsspec URL (s3://...)."""
    path = store_path(segments_dir)
    if not path.exists():
        raise SegmentStoreError(f"segment store {str(path)!r} does not exist")
    return SegmentReader(path, cache_bytes)


def inspect_store(reader: SegmentReader, config: ExperimentConfig) -> StoreSummary:
    """Check that the store can train this config; every problem names the store and the field."""
    where = str(reader.path)
    field = motion_field(config)
    for needed in (field, "audio_features"):
        if needed not in reader.fields:
            hint = " (no sequence in it has FLAME tracking)" if needed == "flame_offsets" else ""
            raise SegmentStoreError(f"segment store {where!r} has no {needed!r} array{hint}; it has {reader.fields}")
    flame = field == "flame_offsets"
    n_train, n_val = len(reader.indices("train", flame=flame)), len(reader.indices("val", flame=flame))
    which = "train segments with FLAME" if flame else "train segments"
    if len(reader) == 0:
        raise SegmentStoreError(f"segment store {where!r} is empty (0 segments)")
    per_step = config.train.batch_size * config.train.devices  # DDP: one batch per process per step
    if n_train < per_step:
        devices = f" x train.devices = {config.train.devices}" if config.train.devices > 1 else ""
        raise SegmentStoreError(
            f"segment store {where!r} has {n_train} {which}, fewer than one batch "
            f"(train.batch_size = {config.train.batch_size}{devices}); add data or lower the batch size"
        )
    if n_val == 0:
        raise SegmentStoreError(
            f"segment store {where!r} has no 'val' segments{' with FLAME' if flame else ''}; "
            "at least one identity must be in the val split"
        )
    motion = reader.item_shape(field)
    audio = reader.item_shape("audio_features")
    if audio[-1] != config.model.audio_dim:
        raise SegmentStoreError(
            f"segment store {where!r}: audio_features are {audio[-1]}-d, config model.audio_dim is {config.model.audio_dim}"
        )
    if field == "expression" and motion[-1] != config.model.motion_dim:
        raise SegmentStoreError(
            f"segment store {where!r}: expression codes are {motion[-1]}-d, config model.motion_dim is {config.model.motion_dim}"
        )
    if motion[0] != audio[0]:
        raise SegmentStoreError(
            f"segment store {where!r}: {field} has {motion[0]} frames per segment, audio_features {audio[0]}"
        )
    return StoreSummary(
        path=reader.path,
        n_train=n_train,
        n_val=n_val,
        segment_frames=int(motion[0]),
        fps=int(reader.attrs["fps"]),
        audio_dim=int(audio[-1]),
        motion_field=field,
        motion_shape=tuple(int(s) for s in motion[1:]),
    )


def _already_batched(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch


class SegmentDataset(Dataset):
    """Segments `indices` of a store -> {"motion": [B, L, D], "audio": [B, L, A]} per batch.

    Audio, and motion unless given, are read through a `SegmentReader` (`reader`, or one opened per
    process). `motion` holds per-frame motion in RAM (the FLAME variant's PCA codes), with
    `motion_starts` the row of each segment's first frame in it. Motion is raw (un-normalised).
    """

    def __init__(
        self,
        segments_dir: str | Path | StorePath,
        indices: np.ndarray,
        field: str = "expression",
        motion: np.ndarray | None = None,
        motion_starts: np.ndarray | None = None,
        reader: SegmentReader | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        self.segments_dir = store_path(segments_dir)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.field, self.motion, self.motion_starts = field, motion, motion_starts
        if motion is not None and (motion_starts is None or len(motion_starts) != len(self.indices)):
            raise ValueError("per-frame motion needs one start row per segment")
        self.cache_bytes = cache_bytes
        self._reader = reader

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reader": None}  # each worker opens its own

    @property
    def reader(self) -> SegmentReader:
        if self._reader is None:
            self._reader = SegmentReader(self.segments_dir, self.cache_bytes)
        return self._reader

    def _motion(self, positions: np.ndarray) -> np.ndarray:
        if self.motion is None:
            return self.reader.read(self.field, self.indices[positions])
        rows = self.motion_starts[positions][:, None] + np.arange(self.reader.segment_frames)
        return self.motion[rows]

    def __getitems__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        positions = np.asarray(positions, dtype=np.int64)
        audio = self.reader.read("audio_features", self.indices[positions])
        return {
            "motion": torch.from_numpy(np.ascontiguousarray(self._motion(positions), dtype=np.float32)),
            "audio": torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
        }

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([position]).items()}


def _mean_std(read, indices: np.ndarray, segment_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-dim mean and std over every frame of the segments `indices`, block by block."""
    step = max(1, READ_BLOCK_BYTES // max(segment_bytes, 1))
    total = squares = None
    count = 0
    for start in range(0, len(indices), step):
        block = read(indices[start : start + step])
        flat = block.reshape(-1, block.shape[-1]).astype(np.float64)
        total = flat.sum(0) if total is None else total + flat.sum(0)
        squares = (flat**2).sum(0) if squares is None else squares + (flat**2).sum(0)
        count += len(flat)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


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
        self._reader: SegmentReader | None = None
        self._motion_codes: np.ndarray | None = None  # FLAME: PCA codes per stored frame
        self._device_frames: DeviceFrames | None = None
        self._rank, self._world_size = 0, 1
        self.data_path = "not prepared"  # how batches reach the model, for the log

    def prepare(self) -> StoreSummary:
        probe = open_reader(self.segments_dir, cache_bytes=0)
        summary = self.summary = inspect_store(probe, self.config)
        flame = summary.motion_field == "flame_offsets"
        # Frames, not windows, are what a reader holds: FLAME motion becomes K PCA codes per frame.
        total_frames = int(probe.frames.shape("audio_features")[0])
        motion_floats = 0 if flame else int(np.prod(summary.motion_shape))
        total_mb = 4 * (motion_floats + summary.audio_dim) * total_frames / 2**20
        self._preloaded = total_mb <= self.config.data.preload_max_mb
        budget = int(self.config.data.preload_max_mb * 2**20) if self._preloaded else 0
        reader = open_reader(self.segments_dir, cache_bytes=budget) if self._preloaded else probe
        train_idx, val_idx = reader.indices("train", flame=flame), reader.indices("val", flame=flame)

        motion = train_starts = val_starts = None
        if flame:
            self.basis, self.pca_energy = self._fit_pca(reader, train_idx)
            motion = self._project_flame(reader, torch.from_numpy(self.basis))
            train_starts = reader.first_rows("flame_offsets", train_idx)
            val_starts = reader.first_rows("flame_offsets", val_idx)
            log.info(
                "FLAME PCA: %d components keep %.4f of the offset energy", len(self.basis), float(self.pca_energy.sum())
            )
            window = np.arange(summary.segment_frames)
            read = lambda rows: motion[reader.first_rows("flame_offsets", rows)[:, None] + window]
            segment_bytes = 4 * motion.shape[1] * summary.segment_frames
        else:
            read = lambda rows: reader.read(summary.motion_field, rows)
            segment_bytes = 4 * motion_floats * summary.segment_frames
        stats_rows = train_idx if self._preloaded or flame else self._stats_sample(train_idx)
        self.mean, self.std = _mean_std(read, stats_rows, segment_bytes)

        shared = reader if self._preloaded else None  # preloaded: one reader's arrays serve both splits
        self._reader, self._motion_codes = reader, motion
        field = summary.motion_field
        self._train = SegmentDataset(self.segments_dir, train_idx, field, motion, train_starts, shared, budget)
        self._val = SegmentDataset(self.segments_dir, val_idx, field, motion, val_starts, shared, budget)
        return summary

    def setup(self, stage: str) -> None:
        """Lightning's hook, once the trainer knows its device and rank: choose how batches travel."""
        trainer = self.trainer
        if trainer is not None:
            self.use_device(trainer.strategy.root_device, trainer.global_rank, trainer.world_size)

    def use_device(self, device: torch.device | str, rank: int = 0, world_size: int = 1) -> None:
        """Put the frame arrays on `device` when they fit its share of memory; else keep streaming."""
        if self.summary is None:
            raise RuntimeError("SegmentDataModule.prepare() must run before use_device()")
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self._rank, self._world_size = rank, world_size
        if self._device_frames is not None and self._device_frames.device == device:
            return
        self._device_frames = None
        fraction = self.config.train.device_data_fraction
        if not self._preloaded or fraction <= 0:
            self.data_path = self._streaming_path(device, "not preloaded" if fraction > 0 else "device_data_fraction 0")
            return
        motion, audio = self._frame_arrays()
        need, have = motion.nbytes + audio.nbytes, device_memory_bytes(device)
        if need > fraction * have:
            share = f"{need / 2**20:.0f} MB > {fraction:g} of {have / 2**30:.1f} GB"
            self.data_path = self._streaming_path(device, share)
            return
        self._device_frames = DeviceFrames(motion, audio, device)
        self.data_path = f"frames on {device} ({need / 2**20:.1f} MB), batches gathered there"

    def _streaming_path(self, device: torch.device, why: str) -> str:
        pinned = " from pinned memory" if device.type == "cuda" else ""
        return f"DataLoader ({why}), {self._workers()} workers{pinned}"

    def _frame_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole motion and audio frame arrays (kept in RAM by the preloading reader)."""
        frames = self._reader.frames
        motion = self._motion_codes if self._motion_codes is not None else frames.whole(self.summary.motion_field)
        return motion, frames.whole("audio_features")

    def _device_batches(self, dataset: SegmentDataset, train: bool) -> DeviceBatches:
        flame = self.summary.motion_field == "flame_offsets"
        motion_starts = self._reader.first_rows(
            "flame_offsets" if flame else self.summary.motion_field, dataset.indices
        )
        trainer = self.trainer
        return DeviceBatches(
            self._device_frames,
            motion_starts,
            self._reader.first_rows("audio_features", dataset.indices),
            self.summary.segment_frames,
            self.config.train.batch_size,
            shuffle=train,
            seed=self.config.train.seed,
            rank=self._rank,
            world_size=self._world_size,
            epoch=(lambda: trainer.current_epoch) if trainer is not None and train else None,
        )

    @property
    def on_device(self) -> bool:
        return self._device_frames is not None

    def _workers(self) -> int:
        # Preloaded arrays make a batch a memory gather: worker processes would only add IPC.
        return 0 if self._preloaded else self.config.train.num_workers

    def _stats_sample(self, train_idx: np.ndarray, max_segments: int = 2048) -> np.ndarray:
        rng = np.random.default_rng(self.config.train.seed)
        return np.sort(rng.choice(train_idx, size=min(max_segments, len(train_idx)), replace=False))

    def _fit_pca(self, reader: SegmentReader, train_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k, budget = self.config.data.pca_components, self.config.data.pca_fit_frames
        frames_per_segment = self.summary.segment_frames
        rng = np.random.default_rng(self.config.train.seed)
        n_segments = min(len(train_idx), max(1, -(-budget // frames_per_segment)))
        chosen = np.sort(rng.choice(train_idx, size=n_segments, replace=False))
        vertex_floats = int(np.prod(self.summary.motion_shape))
        step = max(1, READ_BLOCK_BYTES // (4 * vertex_floats * frames_per_segment))
        frames = np.concatenate(
            [reader.read("flame_offsets", chosen[i : i + step]) for i in range(0, len(chosen), step)]
        ).reshape(-1, vertex_floats)
        if len(frames) > budget:
            frames = frames[np.sort(rng.choice(len(frames), size=budget, replace=False))]
        try:
            basis, energy = fit_pca_basis(torch.from_numpy(frames), k, seed=self.config.train.seed)
        except ValueError as err:
            raise SegmentStoreError(f"segment store {str(self.segments_dir)!r}: {err}") from err
        return basis.numpy(), energy.numpy()

    def _project_flame(self, reader: SegmentReader, basis: torch.Tensor) -> np.ndarray:
        """Every stored FLAME frame as K PCA codes [TF, K], read block by block."""
        n_frames = reader.frames.shape("flame_offsets")[0]
        step = max(1, READ_BLOCK_BYTES // (4 * basis.shape[1]))
        codes = np.empty((n_frames, basis.shape[0]), dtype=np.float32)
        for start in range(0, n_frames, step):
            block = reader.frames.block("flame_offsets", start, min(start + step, n_frames)).astype(np.float32)
            codes[start : start + len(block)] = (torch.from_numpy(block).flatten(1) @ basis.T).numpy()
        return codes

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

    def _loader(self, dataset: SegmentDataset, train: bool) -> DataLoader | DeviceBatches:
        if dataset is None:
            raise RuntimeError("SegmentDataModule.prepare() must run before the dataloaders are built")
        if self._device_frames is not None:
            return self._device_batches(dataset, train)
        workers = self._workers()
        generator = torch.Generator().manual_seed(self.config.train.seed)
        return DataLoader(
            dataset,
            batch_size=self.config.train.batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=workers,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,  # batches read ahead while the device computes
            collate_fn=_already_batched,
            generator=generator if train else None,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self._train, train=True)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self._val, train=False)
