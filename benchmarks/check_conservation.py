"""How well conserve mode keeps each frame's total, as the spectrogram grows.

    python benchmarks/check_conservation.py

SPEC §4 asks for |sum Y - sum X| <= 1e-12 sum|X| per frame in float64. Prints the worst
relative error over 50 random frames for each K, with X in [0, 1000) and two radius
ranges. Rounding in the impulse rows makes the error grow roughly like K^2 eps.
"""
import numpy as np

import specblur


def main():
    rng = np.random.default_rng(0)
    print(f"{'K':>6} {'U(-1,3)':>10} {'U(0,2K)':>10}")
    for K in (257, 513, 1025, 2049, 4097):
        X = rng.uniform(0, 1e3, (K, 50))
        worst = []
        for r in (rng.uniform(-1, 3, X.shape), rng.uniform(0, 2 * K, X.shape)):
            Y = specblur.blur(X, r, mode="conserve")
            worst.append((np.abs(Y.sum(0) - X.sum(0)) / np.abs(X).sum(0)).max())
        print(f"{K:6d} {worst[0]:10.1e} {worst[1]:10.1e}")


if __name__ == "__main__":
    main()
