"""Segment batches drawn on the training device from frame arrays loaded there once.

When the frame arrays fit a share of the device's memory (`train.device_data_fraction`), a batch is
one index gather on the device: no DataLoader, no worker processes, no host-to-device copy per step
(on a CPU the "device" is host RAM, and the gather replaces the DataLoader's per-batch machinery).
Under DDP each rank draws its own share of one permutation that every rank computes from the same
seed, so the ranks see disjoint segments each epoch, as a DistributedSampler would give them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
import torch


def device_memory_bytes(device: torch.device) -> int:
    """Total memory of `device`: the GPU's own memory on CUDA, the host's RAM otherwise."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


class DeviceFrames:
    """Per-frame arrays (motion, audio) as tensors on one device, shared by the train and val batches."""

    def __init__(self, motion: np.ndarray, audio: np.ndarray, device: torch.device):
        # float32 on the device: the model's inputs; autocast lowers them inside the step when asked.
        self.motion = torch.as_tensor(np.asarray(motion, dtype=np.float32)).to(device)
        self.audio = torch.as_tensor(np.asarray(audio, dtype=np.float32)).to(device)
        self.device = device

    @staticmethod
    def nbytes(motion_rows: int, motion_floats: int, audio_rows: int, audio_floats: int) -> int:
        return 4 * (motion_rows * motion_floats + audio_rows * audio_floats)


class DeviceBatches:
    """An iterable of {"motion": [B, L, D], "audio": [B, L, A]} batches gathered on the device.

    `motion_starts` / `audio_starts`: each segment's first row in the frame arrays. With `shuffle`
    every epoch (each `iter()`) draws a new permutation from `seed` and the epoch number."""

    def __init__(
        self,
        frames: DeviceFrames,
        motion_starts: np.ndarray,
        audio_starts: np.ndarray,
        segment_frames: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: Callable[[], int] | None = None,
    ):
        if len(motion_starts) != len(audio_starts):
            raise ValueError("one motion start and one audio start per segment")
        device = frames.device
        self.frames = frames
        self.motion_starts = torch.as_tensor(np.asarray(motion_starts, dtype=np.int64)).to(device)
        self.audio_starts = torch.as_tensor(np.asarray(audio_starts, dtype=np.int64)).to(device)
        self.window = torch.arange(segment_frames, device=device)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self._epoch = epoch  # the trainer's epoch: a resumed run continues the sequence of permutations
        self._epochs_drawn = 0
        self._drawn = 0  # batches of the current epoch handed out (saved in checkpoints)
        self._skip = 0  # after a resume: batches of the first epoch that the previous run already drew

    def _shard(self) -> torch.Tensor:
        """This rank's segment positions for the coming epoch (on the device)."""
        n = len(self.motion_starts)
        if self.shuffle:
            epoch = self._epoch() if self._epoch is not None else self._epochs_drawn
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=generator)  # on the host: n is small, one copy per epoch
            # Equal shards (as DistributedSampler with drop_last): every rank takes as many steps.
            per_rank = n // self.world_size
            order = order[: per_rank * self.world_size]
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size].to(self.frames.device)

    def __len__(self) -> int:
        n = len(self.motion_starts)
        if self.shuffle:
            return (n // self.world_size) // self.batch_size  # drop the last, partial batch
        mine = len(range(self.rank, n, self.world_size))
        return -(-mine // self.batch_size)

    def state_dict(self) -> dict[str, int]:
        """Lightning saves this with a checkpoint and restores it, so a resumed run continues mid-epoch
        (give or take the one batch Lightning fetched ahead)."""
        return {"drawn": self._drawn}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = int(state.get("drawn", 0))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        positions = self._shard()
        self._epochs_drawn += 1
        start, self._skip = min(self._skip, len(self)), 0
        for b in range(start, len(self)):
            self._drawn = b + 1
            chosen = positions[b * self.batch_size : (b + 1) * self.batch_size]
            yield {
                "motion": self.frames.motion[self.motion_starts[chosen, None] + self.window],
                "audio": self.frames.audio[self.audio_starts[chosen, None] + self.window],
            }
