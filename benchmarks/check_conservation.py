"""How well conserve and renormalize modes keep each frame's total, as the spectrogram grows.

    python benchmarks/check_conservation.py

SPEC §4 asks for |sum Y - sum X| <= 1e-12 sum|X| per frame in float64 (and §9.1 the same
for renormalize). Prints the worst relative error over 50 random frames for each K, with
X in [0, 1000) and two radius ranges. The kernels' running sums round like K^2 eps
(5e-12 at K = 4097); each frame's blurred mass is rescaled to the exact total it was
given (``kernels._scalar.mass_scale``), which leaves about K eps.
"""
import numpy as np

import specblur

RADII = {"U(-1,3)": lambda rng, K, shape: rng.uniform(-1, 3, shape),
         "U(0,2K)": lambda rng, K, shape: rng.uniform(0, 2 * K, shape)}


def main():
    modes = ("conserve", "renormalize")
    print(f"{'K':>6} " + " ".join(f"{m[:6] + ' ' + label:>20}" for m in modes for label in RADII))
    for K in (257, 513, 1025, 2049, 4097):
        rng = np.random.default_rng(0)
        X = rng.uniform(0, 1e3, (K, 50))
        radii = [draw(rng, K, X.shape) for draw in RADII.values()]
        worst = []
        for mode in modes:
            for r in radii:
                Y = specblur.blur(X, r, mode=mode)
                worst.append((np.abs(Y.sum(0) - X.sum(0)) / np.abs(X).sum(0)).max())
        print(f"{K:6d} " + " ".join(f"{w:20.1e}" for w in worst))


if __name__ == "__main__":
    main()
