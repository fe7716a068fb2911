"""How a sweep stores its snapshot fields (SPEC §8): ``store_dtype`` and the final table.

``fields/<run_id>.parquet`` holds every snapshot at the sweep's ``store_dtype`` (float32 by
default), ``final/<run_id>.parquet`` the last snapshot's ``m`` and ``r`` at float64, and the
readers of :mod:`specblur.sweep.results` give float64 fields with the final values exact.
"""
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import specblur
from specblur.cli import sweep_main
from specblur.schema import FIELD_NAMES, FINAL_NAMES, STORE_DTYPES
from specblur.sweep.config import load_sweep
from specblur.sweep.evaluate import _final_radius
from specblur.sweep.results import (field_array, fields_frame, final_frame, read_fields,
                                    read_table_folder, write_table)
from test_cli import sweep, write_wav

# two runs: raw and softplus (whose r is not m), 5 updates, snapshots at 2, 4 and 5
BODY = """\
base:
  epochs: 5
  snapshot_every: 2
  lam: 0.1
runs:
  - {m_init: 2.0}
  - {m_init: 3.0, param: softplus}
"""


def write_sweep(folder, extra="", body=BODY):
    path = folder / "store.yaml"
    path.write_text("name: store\ninput: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32}\n"
                    + textwrap.dedent(body) + extra)
    return path


def fit_again(run):
    """The run's fit, in this process, on the sweep's own analysed input."""
    from specblur.audio import load_input

    return specblur.fit(load_input(run.input.settings), **run.settings)


def stored_types(path):
    schema = pq.read_schema(path)
    return {name: str(schema.field(name).type) for name in schema.names}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The sweep run once with the default store_dtype and once with float64."""
    out = {}
    for dtype in ("default", "float64"):
        folder = tmp_path_factory.mktemp(dtype)
        write_wav(folder / "a.wav")
        path = write_sweep(folder, "" if dtype == "default" else f"store_dtype: {dtype}\n")
        sweep_obj = load_sweep(path)
        assert sweep_main([str(path), "--out", str(folder / "out")]) == 0
        fits = {run.run_id: fit_again(run) for run in sweep_obj.runs}
        out[dtype] = {"folder": folder / "out" / "store", "sweep": sweep_obj, "fits": fits}
    return out


def test_fields_are_float32_on_disk_by_default(stored):
    s = stored["default"]
    assert s["sweep"].store_dtype == "float32"
    for rid in s["fits"]:
        types = stored_types(s["folder"] / "fields" / f"{rid}.parquet")
        assert {types[name] for name in FIELD_NAMES} == {"float"}, types
        assert types["k"] == types["t"] == types["epoch"] == "int32"
        final = stored_types(s["folder"] / "final" / f"{rid}.parquet")
        assert {final[name] for name in FINAL_NAMES} == {"double"}, final


def test_float64_on_request(stored):
    s = stored["float64"]
    assert s["sweep"].store_dtype == "float64"
    for rid, res in s["fits"].items():
        path = s["folder"] / "fields" / f"{rid}.parquet"
        assert {stored_types(path)[name] for name in FIELD_NAMES} == {"double"}
        raw = pd.read_parquet(path)
        for epoch, snap in res.snapshots.items():
            rows = raw[raw.epoch == epoch]
            for name in FIELD_NAMES:  # every snapshot, bit for bit
                np.testing.assert_array_equal(rows[name].to_numpy(), snap[name].ravel())


def test_final_m_and_r_are_the_fits_exactly(stored):
    for s in stored.values():
        for rid, res in s["fits"].items():
            assert res.status == "done"
            K, T = res.m.shape
            final = pd.read_parquet(s["folder"] / "final" / f"{rid}.parquet")
            assert (final.epoch == 5).all() and len(final) == K * T
            np.testing.assert_array_equal(final.m.to_numpy().reshape(K, T), res.m)
            np.testing.assert_array_equal(final.r.to_numpy().reshape(K, T), res.r)
            # every reader gives the same exact values for the last snapshot
            last = read_fields(s["folder"], rid, epochs="last", columns=None)
            assert {str(last[c].dtype) for c in FIELD_NAMES} == {"float64"}
            for name in FINAL_NAMES:
                np.testing.assert_array_equal(field_array(last, name), getattr(res, name))
            loaded = specblur.load(s["folder"])
            mine = loaded.fields[(loaded.fields.run_id == rid) & (loaded.fields.epoch == 5)]
            np.testing.assert_array_equal(mine.m.to_numpy().reshape(K, T), res.m)
            np.testing.assert_array_equal(mine.r.to_numpy().reshape(K, T), res.r)
            assert set(loaded.final.run_id) == set(s["fits"])
            epoch, r = _final_radius(s["folder"], rid, (K, T))  # what evaluate: uses
            assert epoch == 5
            np.testing.assert_array_equal(r, res.r)


def test_earlier_snapshots_read_back_as_float32_values(stored):
    s = stored["default"]
    for rid, res in s["fits"].items():
        every = read_fields(s["folder"], rid, epochs="all", columns=None)
        assert {str(every[c].dtype) for c in FIELD_NAMES} == {"float64"}
        for epoch, snap in res.snapshots.items():
            rows = every[every.epoch == epoch]
            exact = FINAL_NAMES if epoch == 5 else ()
            for name in FIELD_NAMES:
                want = snap[name].ravel()
                if name not in exact:
                    want = want.astype(np.float32).astype(np.float64)
                np.testing.assert_array_equal(rows[name].to_numpy(), want)


def test_store_dtype_is_not_part_of_the_run_id(stored):
    ids = {dtype: [run.run_id for run in s["sweep"].runs] for dtype, s in stored.items()}
    assert ids["default"] == ids["float64"]
    assert set(stored["default"]["fits"]) == set(stored["float64"]["fits"])


def test_a_changed_store_dtype_resumes(tmp_path, capsys):
    write_wav(tmp_path / "a.wav")
    path = write_sweep(tmp_path)
    out = tmp_path / "out"
    rc, stdout, _ = sweep(capsys, path, "--out", out)
    assert rc == 0 and "2 runs, 2 to run" in stdout
    folder = out / "store"
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.parquet")
              if p.parent.name in ("fields", "final", "history")}
    # the same runs with float64 storage and one more run: only the new run runs
    path = write_sweep(tmp_path, "store_dtype: float64\n",
                       body=BODY + "  - {m_init: 4.0}\n")
    rc, stdout, stderr = sweep(capsys, path, "--out", out)
    assert rc == 0, stderr
    assert "3 runs, 1 to run" in stdout
    assert {p: p.stat().st_mtime_ns for p in before} == before
    new = load_sweep(path).runs[-1].run_id
    assert {stored_types(folder / "fields" / f"{new}.parquet")[n] for n in FIELD_NAMES} == \
        {"double"}
    # a folder that mixes both reads as float64, every run with its final snapshot exact
    res = specblur.load(folder)
    assert {str(res.fields[c].dtype) for c in FIELD_NAMES} == {"float64"}
    assert set(res.fields.run_id) == set(res.runs.run_id) == set(res.final.run_id)
    for rid, final in res.final.groupby("run_id"):
        last = res.fields[(res.fields.run_id == rid) & (res.fields.epoch == 5)]
        np.testing.assert_array_equal(last.m.to_numpy(), final.m.to_numpy())
    assert len(pd.read_parquet(folder / "fields")) == len(res.fields)


BAD = {
    "float16": ("store_dtype: float16\n", ["store_dtype", "float32, float64", "'float16'"]),
    "typo of the value": ("store_dtype: flaot64\n", ["store_dtype", "did you mean 'float64'"]),
    "typo of the key": ("store_dtyp: float64\n", ["store_dtyp", "did you mean 'store_dtype'"]),
    "a number": ("store_dtype: 32\n", ["store_dtype", "32"]),
    "empty": ("store_dtype:\n", ["store_dtype", "empty", "'float32'"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_store_dtype_is_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    extra, needles = BAD[case]
    write_wav(tmp_path / "a.wav")
    path = write_sweep(tmp_path, extra)
    rc, stdout, stderr = sweep(capsys, path, "--out", tmp_path / "out")
    assert rc == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("specblur-sweep: error:"), stderr
    assert "store.yaml" in lines[0]
    for needle in needles:
        assert needle in lines[0], (case, lines[0])
    assert not (tmp_path / "out").exists()


def test_sweep_yaml_records_the_store_dtype(stored):
    import yaml

    for dtype, s in stored.items():
        data = yaml.safe_load((s["folder"] / "sweep.yaml").read_text())
        assert data["store_dtype"] == ("float32" if dtype == "default" else dtype)


# --- the tables and readers alone, on random snapshots ------------------------------------


def _snapshots(seed, K, T, epochs):
    rng = np.random.default_rng(seed)
    out = {}
    for epoch in epochs:
        m = rng.normal(0, 10, (K, T)) * 10.0 ** rng.integers(-8, 8, (K, T))
        out[epoch] = {"m": m, "r": np.logaddexp(0, m), "g_mse": rng.normal(0, 1e-6, (K, T)),
                      "g_ent": -1 / (np.abs(m) + 1e-8)}
    return out


@given(seed=st.integers(0, 2 ** 32 - 1), K=st.integers(1, 9), T=st.integers(1, 9),
       epochs=st.lists(st.integers(1, 10 ** 6), min_size=1, max_size=4, unique=True),
       dtype=st.sampled_from(STORE_DTYPES),
       columns=st.sampled_from([None, ("epoch", "r"), ("k", "t", "m"), ("epoch", "k", "t", "r"),
                                ("g_mse",), ("epoch", "m", "r", "g_ent")]),
       which=st.sampled_from(["all", "last", "ends"]))
def test_tables_round_trip(tmp_path_factory, seed, K, T, epochs, dtype, columns, which):
    folder = tmp_path_factory.mktemp("roundtrip")
    rid = "0123456789ab"
    snaps = _snapshots(seed, K, T, epochs)
    write_table(folder / "fields" / f"{rid}.parquet", fields_frame(rid, snaps, dtype))
    write_table(folder / "final" / f"{rid}.parquet", final_frame(rid, snaps))
    got = read_fields(folder, rid, epochs=which, columns=columns)
    assert list(got.columns) == list(columns or ["run_id", "epoch", "k", "t", *FIELD_NAMES])
    stored = sorted(snaps)
    want_epochs = {"all": stored, "last": stored[-1:], "ends": sorted({stored[0], stored[-1]})}
    assert len(got) == K * T * len(want_epochs[which])
    full = read_fields(folder, rid, epochs=which, columns=None)  # to locate the rows
    for epoch in want_epochs[which]:
        rows = (full.epoch == epoch).to_numpy()
        for name in [c for c in got.columns if c in FIELD_NAMES]:
            want = snaps[epoch][name].ravel()
            if not (epoch == stored[-1] and name in FINAL_NAMES):
                want = want.astype(dtype).astype(np.float64)
            assert got[name].dtype == np.float64
            np.testing.assert_array_equal(got[name].to_numpy()[rows], want)
    # a folder-wide read agrees with the per-run reader
    pd.testing.assert_frame_equal(read_table_folder(folder, "fields").drop(columns="run_id"),
                                  read_fields(folder, rid, "all", None).drop(columns="run_id"))
    # and so does one given the final table read already (as specblur.load reads it)
    final = read_table_folder(folder, "final")
    pd.testing.assert_frame_equal(read_table_folder(folder, "fields", final),
                                  read_table_folder(folder, "fields"))


def test_load_reads_each_final_table_once(tmp_path, monkeypatch):
    from specblur.sweep import results

    folder = tmp_path / "sweep"
    runs = {}
    for i, rid in enumerate(("0123456789ab", "ba9876543210")):
        snaps = _snapshots(i, 3, 4, [2, 5])
        runs[rid] = snaps
        write_table(folder / "fields" / f"{rid}.parquet", fields_frame(rid, snaps, "float32"))
        write_table(folder / "final" / f"{rid}.parquet", final_frame(rid, snaps))
    write_table(folder / "runs.parquet", pd.DataFrame({"run_id": list(runs)}))
    reads = []
    read_parquet = pd.read_parquet
    monkeypatch.setattr(results.pd, "read_parquet",
                        lambda path, *a, **kw: reads.append(Path(path)) or
                        read_parquet(path, *a, **kw))
    res = results.load(folder, tables=("fields", "final"))
    assert sorted(p.name for p in reads if p.parent.name == "final") == \
        sorted(f"{rid}.parquet" for rid in runs)
    for rid, snaps in runs.items():  # the last snapshot's m and r are exact, not float32
        last = res.fields[(res.fields.run_id == rid) & (res.fields.epoch == 5)]
        np.testing.assert_array_equal(last["r"].to_numpy(), snaps[5]["r"].ravel())


def test_a_folder_without_final_tables_reads_as_before(tmp_path):
    rid = "0123456789ab"
    snaps = _snapshots(0, 3, 4, [2, 4])
    write_table(tmp_path / "fields" / f"{rid}.parquet", fields_frame(rid, snaps, "float64"))
    got = read_fields(tmp_path, rid, epochs="all", columns=None)
    for epoch, snap in snaps.items():
        for name in FIELD_NAMES:
            np.testing.assert_array_equal(got[got.epoch == epoch][name].to_numpy(),
                                          snap[name].ravel())


def test_no_snapshot_gives_empty_typed_tables():
    from specblur.schema import FINAL_TYPES

    final = final_frame("0123456789ab", {})
    assert list(final.columns) == list(FINAL_TYPES) and final.empty
    numeric = {k: np.dtype(v) for k, v in FINAL_TYPES.items() if v is not str}
    assert {k: final[k].dtype for k in numeric} == numeric
    fields = fields_frame("0123456789ab", {})
    assert fields.empty and {k: fields[k].dtype for k in ("epoch", "k", "t", "m")} == \
        {"epoch": np.int32, "k": np.int32, "t": np.int32, "m": np.float32}
    with pytest.raises(ValueError, match="store_dtype"):
        fields_frame("0123456789ab", {}, "float16")


def test_floats_are_byte_stream_split_and_lossless(tmp_path):
    df = pd.DataFrame({"run_id": "0123456789ab", "epoch": np.int32(3),
                       "x": np.random.default_rng(1).normal(size=1000),
                       "y": np.random.default_rng(2).normal(size=1000).astype(np.float32)})
    path = write_table(tmp_path / "t.parquet", df)
    pd.testing.assert_frame_equal(pd.read_parquet(path), df, check_dtype=False)
    assert pd.read_parquet(path).y.dtype == np.float32
    column = {c.path_in_schema: c for c in (pq.ParquetFile(path).metadata.row_group(0).column(i)
                                            for i in range(4))}
    assert "BYTE_STREAM_SPLIT" in column["x"].encodings
    assert "BYTE_STREAM_SPLIT" in column["y"].encodings
    assert "BYTE_STREAM_SPLIT" not in column["epoch"].encodings
