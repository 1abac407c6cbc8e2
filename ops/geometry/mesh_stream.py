"""Meshes made on a worker thread while the caller renders and encodes the previous ones.

While frame t+1 is meshed (torch SDF evaluation and scikit-image's marching cubes, both of which
release the GIL for their heavy loops), frame t is rendered (OpenGL, also outside the GIL) and
handed to ffmpeg (another process). A small bounded queue keeps memory flat: at most `depth`
meshes wait. On a GPU head the worker runs its kernels on its own CUDA stream, so they do not
queue behind anything the main thread puts on the default stream.

Errors in the worker reach the caller at the frame where they happened; when the caller stops
early (an error while rendering, Ctrl-C), `close()` tells the worker to stop after its current
frame and waits for it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator

import torch

from ops.geometry.meshing import Mesh


def head_device(head: object) -> torch.device:
    """The device a head model's parameters live on (CPU for parameter-free heads such as the analytic one)."""
    if isinstance(head, torch.nn.Module):
        for parameter in head.parameters():
            return parameter.device
    return torch.device("cpu")


class MeshStream:
    """Iterate, in frame order, over `make(0) ... make(n_frames - 1)` computed on worker threads.

    With `workers` > 1, worker k makes frames k, k + workers, ... (each on its own CUDA stream on a
    GPU): on a CPU the second core meshes while the first renders, and the GIL is free while torch
    and marching cubes work. `on_mesh(index, mesh)` runs on the worker right after each mesh is
    made (e.g. writing it to a PLY). Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        make: Callable[[int], Mesh],
        n_frames: int,
        *,
        workers: int = 1,
        depth: int = 4,
        device: torch.device | str = "cpu",
        on_mesh: Callable[[int, Mesh], None] | None = None,
    ) -> None:
        self._make, self.n_frames = make, n_frames
        self.workers = max(1, min(workers, n_frames))
        self._queues: list[queue.Queue] = [queue.Queue(maxsize=max(1, depth)) for _ in range(self.workers)]
        self._stop = threading.Event()
        self._device = torch.device(device)
        self._on_mesh = on_mesh
        self._threads = [
            threading.Thread(target=self._run, args=(k,), name=f"mesh-stream-{k}", daemon=True)
            for k in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    def _stream(self):
        if self._device.type == "cuda" and torch.cuda.is_available():
            return torch.cuda.stream(torch.cuda.Stream(self._device))
        return contextlib.nullcontext()

    def _put(self, worker: int, item) -> bool:
        """Put unless the consumer has gone; False when it has."""
        while not self._stop.is_set():
            try:
                self._queues[worker].put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, worker: int) -> None:
        try:
            with self._stream():
                for index in range(worker, self.n_frames, self.workers):
                    if self._stop.is_set():
                        return
                    mesh = self._make(index)
                    if self._on_mesh is not None:
                        self._on_mesh(index, mesh)
                    if not self._put(worker, mesh):
                        return
        except BaseException as error:  # handed to the consumer, raised at this frame
            self._put(worker, error)

    def __iter__(self) -> Iterator[Mesh]:
        for index in range(self.n_frames):
            item = self._queues[index % self.workers].get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        for q in self._queues:
            with contextlib.suppress(queue.Empty):
                while True:
                    q.get_nowait()
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> MeshStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
