"""Speed of the synthetic dataset: raw eSpeak per word, one clip in-process, and whole-set
generation with 1 and 2 workers (goal: 3,000 clips/minute on 2 cores).

    .venv/bin/python benchmarks/synth_speed.py [--size small] [--workers 1 2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from nas_kws.data import espeak, synth, synth_audio

GOAL_CLIPS_PER_MINUTE = 3000


def espeak_ms_per_word(repeats: int = 3) -> tuple[float, float]:
    """(wall, CPU) milliseconds per word over all words and accents."""
    tts = espeak.get_espeak()
    tts.synthesize("warm up", "en")
    calls = [(word, accent) for _ in range(repeats) for word in synth.WORDS
             for accent in synth_audio.ACCENTS]
    wall, cpu = time.perf_counter(), time.process_time()
    for word, accent in calls:
        tts.synthesize(word, accent)
    return ((time.perf_counter() - wall) / len(calls) * 1e3,
            (time.process_time() - cpu) / len(calls) * 1e3)


def render_ms_per_clip(clips: int = 300) -> tuple[float, float]:
    """(wall, CPU) milliseconds per finished clip (synthesis, effects, noise), without file
    I/O."""
    bank = synth_audio.make_babble(0, 0, 5)
    speakers = synth.make_speakers(0, 10)
    jobs = [(s, w, word) for s in speakers for w, word in enumerate(synth.WORDS)][:clips]
    wall, cpu = time.perf_counter(), time.process_time()
    for s, w, word in jobs:
        synth_audio.render_clip(s, word, np.random.default_rng([0, s.index, w]), bank)
    return ((time.perf_counter() - wall) / len(jobs) * 1e3,
            (time.process_time() - cpu) / len(jobs) * 1e3)


def generation_clips_per_minute(size: str, workers: int) -> float:
    spec = synth.SYNTH_SIZES[size]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        synth.generate_synth(Path(tmp) / "synth", seed=0, size=size, progress=False,
                             workers=workers)
        seconds = time.perf_counter() - start
    return spec.speakers * spec.clips_per_speaker / seconds * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=list(synth.SYNTH_SIZES))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    wall, cpu = espeak_ms_per_word()
    print(f"espeak synthesis: {wall:.2f} ms/word wall, {cpu:.2f} ms/word CPU")
    wall, cpu = render_ms_per_clip()
    print(f"one clip in-process: {wall:.2f} ms wall, {cpu:.2f} ms CPU "
          f"(= {60000 / cpu:,.0f} clips/CPU-minute)")
    spec = synth.SYNTH_SIZES[args.size]
    print(f"\ngenerate_synth size={args.size} ({spec.speakers * spec.clips_per_speaker} clips)")
    print("| workers | clips/minute | vs 1 worker | vs goal 3,000 |")
    print("|--------:|-------------:|------------:|--------------:|")
    base = None
    for workers in args.workers:
        rate = generation_clips_per_minute(args.size, workers)
        base = base or rate
        print(f"| {workers} | {rate:,.0f} | {rate / base:.2f}x "
              f"| {rate / GOAL_CLIPS_PER_MINUTE:.2f}x |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
