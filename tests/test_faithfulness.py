"""The energy-matched deletion test of SPEC §9.5 (``specblur.faithfulness``)."""
import importlib.util
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import specblur
from specblur.audio import Spectrogram
from specblur.errors import SpecblurError
from specblur.deletion import (COLUMNS, _gradient_scores, _Phi, faithfulness,
                                   faithfulness_summary, select_bins)
from specblur.models import make_model

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "arctic_a0007.wav"
NO_TORCH = importlib.util.find_spec("torch") is None
needs_torch = pytest.mark.skipif(
    NO_TORCH, reason="PyTorch is not installed: pip install 'specblur[speaker]' "
                     "&& pip install --no-deps resemblyzer")

BAND = (12, 20)  # rows the synthetic model sees


class Band:
    """Φ(Y) = rows ``lo:hi`` of ``Y``: only those bins matter, and only through them."""

    def __init__(self, lo=BAND[0], hi=BAND[1]):
        self.lo, self.hi = lo, hi

    def forward(self, Y):
        return np.asarray(Y)[..., self.lo:self.hi, :]

    def vjp(self, Y, g_out):
        G = np.zeros(np.shape(Y))
        G[..., self.lo:self.hi, :] = g_out
        return G


class SingleBand(Band):
    """The same model, but it refuses a batch axis (as a plug-in may)."""

    def forward(self, Y):
        assert np.ndim(Y) == 2, "no batches here"
        return super().forward(Y)


class SilentlyWrongOnBatches(Band):
    """Accepts a (B, K, T) stack without error but slices the wrong axis."""

    def forward(self, Y):
        return np.asarray(Y)[self.lo:self.hi]


def oracle_map(shape, lo=BAND[0], hi=BAND[1]):
    """r = 1 inside the band, growing with the distance to it outside."""
    rows = np.arange(shape[0])[:, None]
    dist = np.maximum(lo - rows, rows - (hi - 1)).clip(0)
    return np.broadcast_to(1.0 + 2.0 * dist, shape).copy()


def direct_d(X, score, R, F, model, mode="conserve"):
    """d computed the plain way: select, blur, forward, mean squared difference."""
    mask = select_bins(X, score, F)
    Y = specblur.blur(X, np.where(mask, float(R), 1.0), mode=mode)
    return float(np.mean((np.asarray(model.forward(Y), float) - model.forward(X)) ** 2))


def naive_selection(X, s, F):
    """Bins in order of (-score, row-major index), taken until the running sum reaches F·total."""
    flat_x, flat_s = X.reshape(-1), s.reshape(-1)
    order = sorted(range(flat_x.size), key=lambda i: (-flat_s[i], i))
    total = 0.0
    for i in order:
        total += flat_x[i]
    mask = np.zeros(flat_x.size, bool)
    acc = 0.0
    if F > 0:
        for i in order:
            mask[i] = True
            acc += flat_x[i]
            if acc >= F * total:
                break
    return mask.reshape(X.shape)


@pytest.fixture(scope="module")
def X():
    """Peaky, like harmonics: every third row is loud, the rest quiet but not zero.

    (On a flat random field, blurring a whole region changes it less than blurring half of
    its bins, since only the fluctuations move; peaks make the test's intuition hold.)
    """
    rng = np.random.default_rng(1)
    X = 0.1 * rng.random((32, 10)) + 0.01
    X[::3] += 1 + rng.random((11, 10))
    return X


# --- selection -----------------------------------------------------------------------------


@st.composite
def selection_inputs(draw):
    K, T = draw(st.integers(1, 8)), draw(st.integers(1, 6))
    X = draw(arrays(np.float64, (K, T), elements=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.25])))
    if X.sum() == 0:
        X[draw(st.integers(0, K - 1)), draw(st.integers(0, T - 1))] = 1.0
    s = draw(arrays(np.float64, (K, T), elements=st.sampled_from([-1.0, 0.0, 2.0, 7.5])))
    F = draw(st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.0, 1.0)))
    return X, s, F


@given(selection_inputs())
def test_selection_is_energy_matched_with_the_crossing_bin(inputs):
    X, s, F = inputs
    mask = select_bins(X, s, F)
    np.testing.assert_array_equal(mask, naive_selection(X, s, F))
    total = X.sum()
    taken = X[mask].sum()
    assert taken >= F * total * (1 - 1e-12)
    if F > 0:
        # the crossing bin is the last one taken: the share before it was short of F
        order = np.argsort(-s.reshape(-1), kind="stable")
        last = order[mask.sum() - 1]
        assert taken - X.reshape(-1)[last] < F * total
    else:
        assert not mask.any()
    if F == 1:
        assert taken == pytest.approx(total, rel=1e-12)
        assert mask[X > 0].all()


def test_ties_keep_row_major_order():
    X = np.ones((3, 3))
    s = np.zeros((3, 3))
    s[2, 2] = 1.0
    # the top score first, then the tied rest in row-major order: (0,0), (0,1), ...
    expected = np.zeros(9, bool)
    expected[[8, 0, 1]] = True
    np.testing.assert_array_equal(select_bins(X, s, 3 / 9), expected.reshape(3, 3))
    # crossing: 2.5 bins' worth of magnitude takes 3 bins
    np.testing.assert_array_equal(select_bins(X, s, 2.5 / 9), expected.reshape(3, 3))


def test_fractions_zero_and_one(X):
    masks = select_bins(X, -X, [0.0, 1.0])
    assert masks.shape == (2,) + X.shape
    assert not masks[0].any() and masks[1].all()
    df = faithfulness(X, oracle_map(X.shape), model=Band(), radii=(4,), fractions=(0.0, 1.0),
                      n_random=2)
    zero = df[df.F == 0.0]
    assert (zero.d == 0).all() and (zero.n_bins == 0).all() and (zero.energy_share == 0).all()
    one = df[df.F == 1.0]
    assert (one.n_bins == X.size).all() and np.allclose(one.energy_share, 1.0)
    # every score blurs every bin at F = 1, so all distances agree
    assert np.allclose(one.d, one.d.iloc[0], rtol=1e-12)


# --- distances -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["conserve", "truncate"])
def test_d_matches_a_direct_computation(X, mode):
    r = oracle_map(X.shape) + np.random.default_rng(2).random(X.shape)
    model = make_model({"kind": "logmel", "n_mels": 8}, sr=16000, n_fft=62, n_bins=32)
    fractions = (0.2, 0.5, 0.9)
    df = faithfulness(X, r, model={"kind": "logmel", "n_mels": 8}, sr=16000, radii=(3.5, 16),
                      fractions=fractions, mode=mode, n_random=3, seed=5)
    assert list(df.columns) == list(COLUMNS)
    assert list(df.score.unique()) == ["map", "anti", "random", "energy", "gradient"]
    rng = np.random.default_rng(5)
    draws = [rng.random(X.shape) for _ in range(3)]
    for R in (3.5, 16.0):
        grad = _gradient_scores(X, _Phi(model, X), R, mode, "cpu")
        for F in fractions:
            row = df[(df.R == R) & (df.F == F)].set_index("score")
            for score, s in (("map", r), ("anti", -r), ("energy", -X), ("gradient", grad)):
                assert row.loc[score, "d"] == pytest.approx(direct_d(X, s, R, F, model, mode),
                                                            rel=1e-10, abs=1e-300)
                mask = select_bins(X, s, F)
                assert row.loc[score, "n_bins"] == mask.sum()
                assert row.loc[score, "energy_share"] == pytest.approx(X[mask].sum() / X.sum())
                assert np.isnan(row.loc[score, "d_std"])
            ds = [direct_d(X, s, R, F, model, mode) for s in draws]
            assert row.loc["random", "d"] == pytest.approx(np.mean(ds), rel=1e-10)
            assert row.loc["random", "d_std"] == pytest.approx(np.std(ds), rel=1e-8, abs=1e-300)
            assert row.loc["random", "energy_share"] >= F


def test_batched_equals_unbatched(X):
    kw = dict(radii=(4, 9.5), fractions=(0.1, 0.5, 0.8), n_random=3, occlusion=True,
              patch=(8, 4))
    r = oracle_map(X.shape)
    ref = faithfulness(X, r, model=Band(), batch=64, **kw)
    assert ref.attrs["batched"]
    for model, batch in ((Band(), 1), (Band(), 5), (SingleBand(), 7),
                         (SilentlyWrongOnBatches(), 3)):
        df = faithfulness(X, r, model=model, batch=batch, **kw)
        pd.testing.assert_frame_equal(df, ref, check_exact=False, rtol=1e-12, atol=0)
    assert not faithfulness(X, r, model=SingleBand(), **kw).attrs["batched"]
    assert not faithfulness(X, r, model=SilentlyWrongOnBatches(), **kw).attrs["batched"]


def test_supports_batch_attribute_is_obeyed(X):
    model = SingleBand()
    model.supports_batch = True  # a lie: the batched call fails loudly, not silently
    with pytest.raises(AssertionError, match="no batches"):
        faithfulness(X, oracle_map(X.shape), model=model, radii=(4,), fractions=(0.5,))


# --- a model whose relevant bins are known ---------------------------------------------------


def test_oracle_map_beats_random_and_its_reverse_loses(X):
    df = faithfulness(X, oracle_map(X.shape), model=Band(), radii=(4, 8))
    summary = faithfulness_summary(df)
    assert list(summary.index) == [4.0, 8.0]
    for R in (4.0, 8.0):
        assert summary.loc[R, "map/random"] < 0.05
        assert summary.loc[R, "curve map/random"] < 0.4  # F = 0.9 blurs nearly everything
        assert summary.loc[R, "anti/random"] > 1.5
        assert summary.loc[R, "curve anti/random"] > 1.5
        assert summary.loc[R, "energy/random"] < 1  # the band holds no special energy
    # R = 4 cannot reach the band from the bins the map picks first at F = 0.5: only
    # rounding in the running sums is left
    assert df[(df.score == "map") & (df.R == 4) & (df.F == 0.5)].d.item() < 1e-25


PLUGIN = textwrap.dedent('''
    from test_faithfulness import Band  # this test module's model, as a plug-in

    def make(sr, n_fft, n_bins, seed, lo=12, hi=20):
        return Band(lo, hi)
''')


@pytest.fixture
def band_plugin(tmp_path, monkeypatch):
    (tmp_path / "faith_band_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return {"kind": "python", "factory": "faith_band_plugin:make", "lo": BAND[0], "hi": BAND[1]}


def test_a_fitted_map_beats_random(X, band_plugin):
    res = specblur.fit(X, m_init=2.0, lam=1e4, lambda_on="mse", mode="conserve", param="exp",
                       optimizer="adam", lr=0.05, epochs=300, model=band_plugin, seed=0)
    assert res.status == "done"
    # the model spec and seed come from the FitResult
    df = faithfulness(X, res, radii=(4, 16), n_random=8)
    summary = faithfulness_summary(df)
    for R in (4.0, 16.0):
        assert summary.loc[R, "map/random"] < 0.2, summary
        assert summary.loc[R, "curve map/random"] < 0.5, summary
        assert summary.loc[R, "anti/random"] > 1.5, summary
    # the map is about the band, not about energy: it beats the energy baseline too
    assert (summary["map/random"] < summary["energy/random"]).all(), summary


# --- gradient and occlusion ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["conserve", "truncate"])
def test_gradient_scores_match_finite_differences(X, mode):
    model = make_model({"kind": "logmel", "n_mels": 8}, sr=16000, n_fft=62, n_bins=32)
    ref = model.forward(X)

    def D(r):
        Y = specblur.blur(X, r, mode=mode)
        return np.mean((model.forward(Y) - ref) ** 2)

    phi = _Phi(model, X)
    for R, p in ((6.5, (10, 3)), (3.25, (0, 0)), (16.0, (31, 9))):
        scores = _gradient_scores(X, phi, R, mode, "cpu")
        r = np.full_like(X, R)
        h = 1e-5
        up, down = r.copy(), r.copy()
        down[p] -= h
        if float(R).is_integer():  # the left derivative at an integer radius (SPEC §3)
            fd = (D(r) - D(down)) / h
        else:
            up[p] += h
            fd = (D(up) - D(down)) / (2 * h)
        assert scores[p] == pytest.approx(-abs(fd), rel=1e-4, abs=1e-12)


def test_occlusion_scores_patches(X):
    df = faithfulness(X, oracle_map(X.shape), model=Band(), radii=(4,), fractions=(0.5,),
                      baselines=(), occlusion=True, patch=(4, 5))
    assert list(df.score) == ["map", "occlusion"]
    # patches outside the band's reach score 0 (d = 0) and go first, so at F = 0.5 the
    # occlusion order is as harmless as the oracle
    assert df.d.iloc[1] == pytest.approx(df.d.iloc[0], abs=1e-15)
    # the same through the baselines list
    df2 = faithfulness(X, oracle_map(X.shape), model=Band(), radii=(4,), fractions=(0.5,),
                       baselines=("occlusion",), patch=(4, 5))
    pd.testing.assert_frame_equal(df, df2)


# --- inputs --------------------------------------------------------------------------------


def test_spectrogram_input_and_identity_default(tmp_path):
    spec = Spectrogram.from_audio(SAMPLE, sr=16000, n_fft=64, hop=256)
    X = spec.mag[:, :20]
    spec = Spectrogram(mag=X, phase=None, sr=16000, n_fft=64, hop=256)
    r = np.random.default_rng(0).random(X.shape) * 8
    df = faithfulness(spec, r, radii=(4,), fractions=(0.5,), baselines=("random",),
                      n_random=2)
    ident = faithfulness(X, r, model={"kind": "identity"}, radii=(4,), fractions=(0.5,),
                         baselines=("random",), n_random=2)
    pd.testing.assert_frame_equal(df, ident)
    mel = faithfulness(spec, r, model={"kind": "logmel", "n_mels": 10}, radii=(4,),
                       fractions=(0.5,), baselines=())
    assert mel.d.item() > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(baselines=("anti", "randm")), "unknown baseline 'randm'.*did you mean 'random'"),
    (dict(baselines=("gradeint",)), "did you mean 'gradient'"),
    (dict(radii=(1.0, 16)), "radii must be"),
    (dict(radii=(np.nan,)), "radii must be"),
    (dict(radii=()), "radii is empty"),
    (dict(fractions=(0.5, 1.5)), "fractions must be"),
    (dict(fractions=(-0.1,)), "fractions must be"),
    (dict(mode="conserv"), "unknown mode 'conserv'.*did you mean 'conserve'"),
    (dict(n_random=0), "n_random"),
    (dict(batch=0), "batch"),
    (dict(patch=(8, 0)), "patch"),
    (dict(patch=(1, 2, 3)), "patch"),
    (dict(model={"kind": "idenity"}), "did you mean 'identity'"),
    (dict(model=object()), "model must be"),
    (dict(device="tpu"), "unknown device"),
])
def test_bad_arguments(X, kwargs, match):
    with pytest.raises(SpecblurError, match=match):
        faithfulness(X, oracle_map(X.shape), **{"radii": (4,), "fractions": (0.5,), **kwargs})


def test_bad_arrays(X):
    r = oracle_map(X.shape)
    with pytest.raises(SpecblurError, match="shape mismatch: r has shape"):
        faithfulness(X, r[:, :-1])
    with pytest.raises(SpecblurError, match="X must be a non-empty 2-D"):
        faithfulness(X[None], r[None])
    bad = r.copy()
    bad[3, 4] = np.nan
    with pytest.raises(SpecblurError, match="r has non-finite"):
        faithfulness(X, bad)
    bad[3, 4] = np.inf
    with pytest.raises(SpecblurError, match="r has non-finite"):
        faithfulness(X, bad)
    badX = X.copy()
    badX[0, 0] = np.nan
    with pytest.raises(SpecblurError, match="X has non-finite"):
        faithfulness(badX, r)
    with pytest.raises(SpecblurError, match="negative"):
        faithfulness(X - 0.5, r)
    with pytest.raises(SpecblurError, match="all zero"):
        faithfulness(np.zeros_like(X), r)
    with pytest.raises(SpecblurError, match="real dtype"):
        faithfulness(X.astype(complex), r)
    with pytest.raises(SpecblurError, match="scores"):
        select_bins(X, r[:1], 0.5)


def test_gradient_needs_a_vjp(X):
    class NoVjp:
        def forward(self, Y):
            return Y

    with pytest.raises(SpecblurError, match="vjp"):
        faithfulness(X, oracle_map(X.shape), model=NoVjp(), radii=(4,), fractions=(0.5,))
    df = faithfulness(X, oracle_map(X.shape), model=NoVjp(), radii=(4,), fractions=(0.5,),
                      baselines=("random",))
    assert len(df) == 2


def test_summary(X):
    df = faithfulness(X, oracle_map(X.shape), model=Band(), radii=(4, 16))
    s = faithfulness_summary(df, F=0.5)
    for col in ("map/random", "anti/random", "energy/random", "gradient/random",
                "map/gradient", "curve map/random", "curve anti/random"):
        assert col in s.columns
    at = df[df.F == 0.5].set_index(["R", "score"]).d
    assert s.loc[16.0, "map/gradient"] == pytest.approx(at[16.0, "map"] / at[16.0, "gradient"])
    mid = df[(df.F > 0.05) & (df.F < 0.95)].groupby(["R", "score"]).d.mean()
    assert s.loc[4.0, "curve anti/random"] == pytest.approx(mid[4.0, "anti"] / mid[4.0, "random"])
    with pytest.raises(SpecblurError, match="F=0.55 is not among"):
        faithfulness_summary(df, F=0.55)
    with pytest.raises(SpecblurError, match="lacks the column"):
        faithfulness_summary(df.drop(columns="d"))


# --- the speaker encoder -------------------------------------------------------------------


@needs_torch
def test_speaker_encoder_batched_equals_per_item():
    spec = Spectrogram.from_audio(SAMPLE, sr=16000, n_fft=400, hop=160, normalize_dbfs=-30)
    X = spec.mag[:, 100:160]
    enc = make_model({"kind": "speaker_encoder", "dtype": "float64"}, sr=16000, n_fft=400,
                     n_bins=201)
    r = np.random.default_rng(0).random(X.shape) * 20
    kw = dict(model=enc, radii=(16,), fractions=(0.2, 0.5), n_random=2)
    batched = faithfulness(X, r, batch=16, **kw)
    assert batched.attrs["batched"]
    enc.supports_batch = False
    single = faithfulness(X, r, **kw)
    assert not single.attrs["batched"]
    pd.testing.assert_frame_equal(batched, single, check_exact=False, rtol=1e-9, atol=1e-15)
    # and the model spec path builds the same encoder
    spec_df = faithfulness(X, r, **{**kw, "model": {"kind": "speaker_encoder",
                                                     "dtype": "float64"}})
    pd.testing.assert_frame_equal(batched, spec_df, check_exact=False, rtol=1e-9, atol=1e-15)
