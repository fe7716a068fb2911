"""Time from a new process's start to its first finished epoch (compiled kernels cached).

    python benchmarks/bench_startup.py [--repeat 3]

Each try starts a fresh Python that imports specblur, analyses the bundled sample and
runs one epoch, as a sweep worker does. The first try also fills Numba's cache if it is
empty; the best of the others is the figure to read.
"""
import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = f"""
import time
t0 = time.perf_counter()
import specblur
spec = specblur.Spectrogram.from_audio({str(ROOT / 'data' / 'arctic_a0007.wav')!r}, sr=16000,
                                       n_fft=512, hop=128)
done = []
specblur.fit(spec, m_init=5.0, epochs=1, callback=lambda n: done.append(time.perf_counter()))
print(done[0] - t0)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    times = []
    for _ in range(args.repeat + 1):
        out = subprocess.run([sys.executable, "-c", CHILD], check=True, capture_output=True,
                             text=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    print(f"first try (may compile): {times[0]:.2f} s; with the cache: best "
          f"{min(times[1:]):.2f} s, worst {max(times[1:]):.2f} s from process start to "
          "the end of the first epoch")


if __name__ == "__main__":
    main()
