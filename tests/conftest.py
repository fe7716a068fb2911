"""Shared fixtures and Hypothesis strategies for the specblur tests."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

settings.register_profile(
    "specblur",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # CI draws the same examples every time, so a red CI is reproducible; local runs explore
    derandomize=bool(os.environ.get("CI")),
)
settings.load_profile("specblur")

MODES = ("truncate", "conserve", "renormalize")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "cudasim: run only in a process with NUMBA_ENABLE_CUDASIM=1 (see .ci/run)"
    )


@pytest.fixture(scope="session", autouse=True)
def _warm_up_kernels():
    """JIT-compile the CPU kernels once, so that no Hypothesis example pays for it.

    Failures are ignored here: the tests themselves report them, and tests that do not
    need the kernels (test_naive.py) must run without them.
    """
    try:
        import specblur

        for dtype in (np.float32, np.float64):
            X = np.arange(6, dtype=dtype).reshape(3, 2)
            r = np.full_like(X, 2.5)
            for mode in MODES:
                specblur.blur(X, r, mode=mode, device="cpu")
                specblur.blur_vjp(X, r, X, mode=mode, device="cpu")
    except Exception:
        pass
    yield


def radius_values(K, fd_safe=False):
    """Radii mixing identity values, integers, fractions and values far beyond K.

    With ``fd_safe`` the radii stay at least 1e-3 away from integers (and from 1), so
    that central finite differences with a small step do not cross a kink.
    """
    big = 10 * K
    if fd_safe:
        frac = st.floats(1e-3, 1 - 1e-3)
        return st.one_of(
            st.floats(-5.0, 1 - 1e-3),
            st.tuples(st.integers(1, 4 * K), frac).map(sum),
            st.tuples(st.integers(4 * K, big), frac).map(sum),
        )
    return st.one_of(
        st.sampled_from([-3.0, -0.0, 0.0, 0.5, 1.0]),
        st.floats(-5.0, 1.0),
        st.integers(1, 4 * K).map(float),
        st.sampled_from([float(big), float(big + 1)]),
        st.floats(1.0, 4.0 * K),
        st.floats(4.0 * K, float(big)),
    )


@st.composite
def blur_inputs(draw, max_K=40, max_T=6, max_B=3, fd_safe=False, nonneg=False, grad=True):
    """Draw ``(X, r, G)`` float64 arrays of shape ``(K, T)`` or ``(B, K, T)``.

    ``G`` is None unless ``grad``.
    """
    K = draw(st.integers(1, max_K))
    T = draw(st.integers(1, max_T))
    shape = (K, T) if draw(st.booleans()) else (draw(st.integers(1, max_B)), K, T)
    x_el = st.floats(-10.0, 10.0, allow_subnormal=False)
    X = draw(arrays(np.float64, shape, elements=x_el))
    if nonneg:
        X = np.abs(X)
    r = draw(arrays(np.float64, shape, elements=radius_values(K, fd_safe)))
    G = draw(arrays(np.float64, shape, elements=x_el)) if grad else None
    return X, r, G


modes = st.sampled_from(MODES)
