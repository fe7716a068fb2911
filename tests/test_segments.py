"""Segments: reading TextGrid and CSV segmentations, automatic segmentation,
frame assignment by centre time, per-segment statistics, and the sweep and report hooks."""
import textwrap

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import specblur
from specblur import SpecblurError
from specblur.sweep.runner import run_sweep
from specblur.segmentation import (AUTO_DEFAULTS, auto_frame_labels, frame_labels,
                                   read_intervals, segment_stats, write_textgrid)
from specblur.sweep.results import load_segments
from specblur.sweep.config import load_sweep

SR, HOP = 16000, 128


# --- CSV ------------------------------------------------------------------------------------


def test_csv_with_header_comments_and_blank_lines(tmp_path):
    path = tmp_path / "seg.csv"
    path.write_text("start,end,label\n# a comment\n0.5,1.0,V\n\n0.0, 0.5, sil\n1.0,1.25,C\n")
    df = read_intervals(path)
    assert df.to_dict("list") == {"start": [0.0, 0.5, 1.0], "end": [0.5, 1.0, 1.25],
                                  "label": ["sil", "V", "C"]}


def test_csv_without_header(tmp_path):
    path = tmp_path / "seg.csv"
    path.write_text("0,0.1,a\n0.1,0.2,b\n")
    assert list(read_intervals(path).label) == ["a", "b"]


@pytest.mark.parametrize("text, line, words", [
    ("start,end,label\n0,0.1,a\n0.1,oops,b\n", 3, "numbers"),
    ("0,0.1,a\n0.1,0.2,\n", 2, "missing label"),
    ("0,0.1,a\n0.3,0.2,b\n", 2, "after start"),
    ("0,0.5,a\n0.4,0.6,b\n", 2, "overlaps"),
    ("0,0.1,a\n0.1,0.2,b\n0.2,0.3,c,d\n", 3, "malformed"),
    ("-1,0.2,a\n", 1, ">= 0"),
])
def test_bad_csv_names_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(SpecblurError) as err:
        read_intervals(path)
    msg = str(err.value)
    assert f"{path}:{line}:" in msg and words in msg


def test_missing_file(tmp_path):
    with pytest.raises(SpecblurError, match="not found.*nope.csv"):
        read_intervals(tmp_path / "nope.csv")


# --- TextGrid -------------------------------------------------------------------------------


def test_textgrid_round_trip_and_tiers(tmp_path):
    iv = pd.DataFrame({"start": [0.0, 0.3, 0.7], "end": [0.3, 0.7, 1.0],
                       "label": ["sil", "C", "V"]})
    path = write_textgrid(iv, tmp_path / "a.TextGrid", duration=1.0, tier="phones")
    pd.testing.assert_frame_equal(read_intervals(path), iv)
    pd.testing.assert_frame_equal(read_intervals(path, tier="phones"), iv)
    with pytest.raises(SpecblurError, match=r"a\.TextGrid: no interval tier 'words'"):
        read_intervals(path, tier="words")


def test_textgrid_skips_empty_intervals(tmp_path):
    iv = pd.DataFrame({"start": [0.0, 0.3, 0.7], "end": [0.3, 0.7, 1.0],
                       "label": ["V", "", "C"]})
    path = write_textgrid(iv, tmp_path / "a.TextGrid", duration=1.0)
    assert list(read_intervals(path).label) == ["V", "C"]


def _good_textgrid(tmp_path):
    iv = pd.DataFrame({"start": [0.0, 0.5], "end": [0.5, 1.0], "label": ["C", "V"]})
    return write_textgrid(iv, tmp_path / "a.TextGrid", duration=1.0)


def test_bad_textgrid_number_names_file_and_line(tmp_path):
    good = _good_textgrid(tmp_path)
    lines = good.read_text().splitlines()
    n = next(i for i, s in enumerate(lines) if s.strip() == "xmax = 0.5")
    lines[n] = lines[n].replace("0.5", "half")
    bad = tmp_path / "bad.TextGrid"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpecblurError) as err:
        read_intervals(bad)
    assert f"{bad}:{n + 1}:" in str(err.value)


def test_bad_textgrid_reversed_interval_names_file_and_line(tmp_path):
    good = _good_textgrid(tmp_path)
    lines = good.read_text().splitlines()
    n = next(i for i, s in enumerate(lines) if s.strip() == "xmax = 0.5")
    lines[n] = lines[n].replace("0.5", "-0.2")   # the first interval ends before it starts
    bad = tmp_path / "bad.TextGrid"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpecblurError) as err:
        read_intervals(bad)
    assert str(bad) in str(err.value) and f":{n + 1}:" in str(err.value)


def test_not_a_textgrid(tmp_path):
    bad = tmp_path / "junk.TextGrid"
    bad.write_text("hello\nworld\n")
    with pytest.raises(SpecblurError, match=r"junk\.TextGrid.*not a readable TextGrid"):
        read_intervals(bad)


# --- frames ---------------------------------------------------------------------------------


def test_frames_belong_to_the_segment_that_holds_their_centre():
    # centres at t * 128 / 16000 = 0, 8 ms, 16 ms, ...
    iv = pd.DataFrame({"start": [0.0, 0.016, 0.030], "end": [0.016, 0.030, 0.040],
                       "label": ["a", "b", "c"]})
    labels = frame_labels(iv, sr=SR, hop=HOP, n_frames=7)
    # t=2 (16 ms) starts b; t=4 (32 ms) in c; t=5 (40 ms) is the end of the last: held
    assert list(labels) == ["a", "a", "b", "b", "c", "c", None]
    df = specblur.segments(iv, sr=SR, hop=HOP, n_frames=7)
    assert list(df.t) == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(df.time, np.arange(6) * HOP / SR)


def test_segments_from_files(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("0,0.02,x\n0.02,0.05,y\n")
    df = specblur.segments(str(path), sr=SR, hop=HOP, n_frames=10)
    assert "".join(df.label) == "xxxyyyy"
    with pytest.raises(SpecblurError, match="'auto' only"):
        specblur.segments(path, sr=SR, hop=HOP, n_frames=10, silence_db=-20)


# --- automatic segmentation -----------------------------------------------------------------


def synthetic(seconds=0.5):
    """Silence, white noise, then a harmonic tone at 150 Hz; each `seconds` long."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    tone = sum(0.3 / h * np.sin(2 * np.pi * 150 * h * t) for h in range(1, 6))
    noise = 0.1 * np.random.default_rng(0).standard_normal(n)
    return np.concatenate([np.zeros(n), noise, tone])


def test_auto_segmentation_of_silence_noise_and_tone():
    y = synthetic()
    labels = auto_frame_labels(y, sr=SR, hop=HOP)
    assert len(labels) == 1 + y.size // HOP
    centre = np.arange(len(labels)) * HOP / SR
    for lo, hi, want in [(0.0, 0.5, "silence"), (0.5, 1.0, "unvoiced"), (1.0, 1.5, "voiced")]:
        core = (centre >= lo + 0.05) & (centre < hi - 0.05)  # away from the edges
        assert set(labels[core]) == {want}
        part = (centre >= lo) & (centre < hi)
        assert np.mean(labels[part] == want) > 0.85
    df = specblur.segments("auto", sr=SR, hop=HOP, waveform=y)
    assert list(dict.fromkeys(df.label)) == ["silence", "unvoiced", "voiced"]


def test_auto_thresholds_are_settable():
    y = synthetic(0.3)
    # a silence threshold above the noise level makes the noise silence
    labels = auto_frame_labels(y, sr=SR, hop=HOP, silence_db=-3.0)
    centre = np.arange(len(labels)) * HOP / SR
    assert set(labels[(centre > 0.35) & (centre < 0.55)]) == {"silence"}
    with pytest.raises(SpecblurError, match="unknown auto threshold.*silence_dB"):
        auto_frame_labels(y, sr=SR, hop=HOP, silence_dB=-3.0)
    assert set(AUTO_DEFAULTS) >= {"silence_db", "fmin", "fmax", "min_duration"}


def test_all_zero_signal_is_silence():
    labels = auto_frame_labels(np.zeros(4000), sr=SR, hop=HOP)
    assert set(labels) == {"silence"}


# --- statistics -----------------------------------------------------------------------------


def test_stats_equal_a_direct_pandas_computation():
    rng = np.random.default_rng(1)
    K, T, sr, n_fft = 33, 40, 16000, 64
    k, t = np.divmod(np.arange(K * T), T)
    fields = pd.concat([pd.DataFrame({"run_id": "abc", "epoch": e, "k": k, "t": t,
                                      "r": rng.gamma(2.0, 1.5, K * T)}) for e in (0, 10)])
    labels = pd.DataFrame({"t": np.arange(5, T), "label": rng.choice(["C", "V", "sil"], T - 5)})
    bands = {"low": [0, 1000], "mid": [1000, 4000], "high": [4000, None]}
    got = segment_stats(fields, labels, sr=sr, n_fft=n_fft, bands=bands)

    last = fields[fields.epoch == 10].merge(labels, on="t")
    last["band"] = pd.cut(last.k * sr / n_fft, [0, 1000, 4000, np.inf], right=False,
                          labels=["low", "mid", "high"])
    g = last.groupby(["label", "band"], observed=True).r
    want = pd.DataFrame({"mean": g.mean(), "median": g.median(),
                         "iqr": g.quantile(0.75) - g.quantile(0.25),
                         "n_values": g.size()}).reset_index()
    want["n_frames"] = want.label.map(labels.groupby("label").t.nunique())
    want["band"] = want.band.astype(str)
    got = got.set_index(["label", "band"]).sort_index()
    want = want.set_index(["label", "band"]).sort_index()
    assert got.index.equals(want.index)
    for col in ("mean", "median", "iqr"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-12)
    for col in ("n_values", "n_frames"):
        np.testing.assert_array_equal(got[col], want[col])
    assert (got.run_id == "abc").all() and (got.epoch == 10).all()


# --- sweeps and the report ------------------------------------------------------------------


def _sweep(tmp_path, segments_line, name="seg"):
    y = synthetic(0.2)
    sf.write(str(tmp_path / "a.wav"), y, SR, subtype="PCM_16")
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        input: {{audio: a.wav, sr: 16000, n_fft: 128, hop: 128{segments_line}}}
        base: {{epochs: 4, snapshot_every: 2, m_init: 2.0}}
        runs:
          - {{lam: 0.01}}
          - {{lam: 0.1}}
        """))
    return path


def test_segments_do_not_change_run_ids(tmp_path):
    plain = load_sweep(_sweep(tmp_path, ""))
    (tmp_path / "s.csv").write_text("0,0.2,sil\n0.2,0.4,C\n0.4,0.6,V\n")
    with_csv = load_sweep(_sweep(tmp_path, ", segments: s.csv"))
    assert [r.run_id for r in plain.runs] == [r.run_id for r in with_csv.runs]
    assert with_csv.input["segments"]["source"] == str((tmp_path / "s.csv").resolve())
    assert plain.input["segments"] is None


@pytest.mark.parametrize("line, words", [
    (", segments: missing.csv", "input.segments: file not found"),
    (", segments: {auto: {silence_dB: 3}}", "unknown auto threshold"),
    (", segments: {path: s.csv, auto: true}", "exactly one of"),
    (", segments: {path: s.csv, colour: red}", "unknown key"),
    (", segments: {path: s.csv, bands: {low: [2000, 1000]}}", "band 'low'"),
    (", segments: bad.csv", "bad.csv:2:"),
])
def test_bad_segments_settings_stop_the_sweep(tmp_path, line, words):
    (tmp_path / "s.csv").write_text("0,0.2,sil\n")
    (tmp_path / "bad.csv").write_text("0,0.2,sil\n0.2,x,V\n")
    with pytest.raises(SpecblurError) as err:
        load_sweep(_sweep(tmp_path, line))
    assert "seg.yaml" in str(err.value) and words in str(err.value)


def test_auto_needs_audio(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((65, 10)))
    path = tmp_path / "s.yaml"
    path.write_text("input: {spectrogram: x.npy, n_fft: 128, segments: auto}\n")
    with pytest.raises(SpecblurError, match="'auto' needs an audio input"):
        load_sweep(path)


def test_sweep_writes_segments_tables_and_the_report_plots_them(tmp_path):
    from specblur import report

    (tmp_path / "s.csv").write_text("start,end,label\n0,0.2,sil\n0.2,0.4,C\n0.4,0.6,V\n")
    sweep = load_sweep(_sweep(tmp_path, ", segments: {path: s.csv, bands: "
                                        "{low: [0, 1000], high: [1000, null]}}"))
    run_sweep(sweep, out=tmp_path / "results")
    folder = tmp_path / "results" / "seg"
    seg = pd.read_parquet(folder / "segments")
    assert set(seg.run_id) == {r.run_id for r in sweep.runs}
    assert set(seg.label) == {"sil", "C", "V"} and set(seg.band) == {"low", "high"}
    res = specblur.load(folder)
    for rid in seg.run_id.unique():
        fields = res.fields[res.fields.run_id == rid]
        labels = specblur.segments(tmp_path / "s.csv", sr=SR, hop=128,
                                   n_frames=fields.t.max() + 1)
        direct = segment_stats(fields, labels, sr=SR, n_fft=128,
                               bands={"low": [0, 1000], "high": [1000, None]})
        pd.testing.assert_frame_equal(seg[seg.run_id == rid].reset_index(drop=True), direct)
    pd.testing.assert_frame_equal(load_segments(folder).sort_values(["run_id", "label", "band"])
                                  .reset_index(drop=True),
                                  seg.sort_values(["run_id", "label", "band"])
                                  .reset_index(drop=True), check_dtype=False)

    # a changed segmentation rewrites the tables although no run is rerun
    (tmp_path / "s2.csv").write_text("0,0.6,all\n")
    run_sweep(load_sweep(_sweep(tmp_path, ", segments: s2.csv")), out=tmp_path / "results")
    assert set(pd.read_parquet(folder / "segments").label) == {"all"}

    page = report.write_report(folder)
    assert (folder / "report" / "segments.png").is_file()
    assert 'src="report/segments.png"' in page.read_text()


def test_report_without_segments_has_no_segment_plot(tmp_path):
    from specblur import report

    run_sweep(load_sweep(_sweep(tmp_path, "")), out=tmp_path / "results")
    folder = tmp_path / "results" / "seg"
    page = report.write_report(folder)
    assert not (folder / "report" / "segments.png").exists()
    assert "segments.png" not in page.read_text()


def test_example_textgrid_covers_the_example_audio():
    from pathlib import Path

    data = Path(__file__).resolve().parent.parent / "data"
    iv = read_intervals(data / "arctic_a0007.TextGrid")
    assert set(iv.label) == {"sil", "C", "V"}
    assert iv.start.iloc[0] == 0.0 and abs(iv.end.iloc[-1] - 4.0) < 1e-3
    assert np.allclose(iv.start.iloc[1:].to_numpy(), iv.end.iloc[:-1].to_numpy())
    spec = specblur.Spectrogram.from_audio(data / "arctic_a0007.wav")
    df = specblur.segments(data / "arctic_a0007.TextGrid", sr=spec.sr, hop=spec.hop,
                           n_frames=spec.mag.shape[1])
    assert len(df) == spec.mag.shape[1]
