"""Sweeps over a corpus (issue 12): several input files in one sweep.

The forms of ``input.audio`` (a list, a glob pattern, a grid axis) and their errors, per-input
segment files (``{stem}``), the ``input`` column, ``audio/<stem>/original.wav``, segment and
faithfulness tables made on each run's own input, resuming, the report's pooled section, and
an old results folder (one input, no ``input`` column) that still loads and reports.
"""
import shutil
import textwrap

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

import specblur
from specblur import report
from specblur._io import file_sha256
from specblur.deletion import faithfulness
from specblur.errors import SpecblurError
from specblur.models import make_model
from specblur.report.pooled import pooled_faithfulness, pooled_segments, settings_points
from specblur.sweep.config import load_sweep
from specblur.sweep.results import field_array, read_fields, read_inputs
from specblur.sweep.runner import run_sweep

SR = 8000
GEOMETRY = "sr: 8000, n_fft: 64, hop: 32"
EVALUATE = "evaluate: {faithfulness: {radii: [4], fractions: [0.25, 0.5], n_random: 2, batch: 8}}\n"


def noise_wav(path, seconds, seed):
    """A short seeded noise burst with a tone (distinct content for every seed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = 0.2 * np.sin(2 * np.pi * (300 + 100 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, SR, subtype="PCM_16")
    return path


def sweep_file(folder, input_body, rest="grid: {lam: [0.1, 1.0]}\n", name="corpus"):
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\ninput: {{{input_body}, {GEOMETRY}}}\n"
                    "base: {epochs: 4, snapshot_every: 2, m_init: 2.0}\n" + rest)
    return path


@pytest.fixture
def clips(tmp_path):
    noise_wav(tmp_path / "a.wav", 0.3, 0)
    noise_wav(tmp_path / "b.wav", 0.5, 1)
    noise_wav(tmp_path / "clips" / "d.wav", 0.2, 3)
    noise_wav(tmp_path / "clips" / "c.wav", 0.2, 2)
    return tmp_path


# --- the sweep file -----------------------------------------------------------------------


def test_list_glob_and_grid_forms(clips):
    one = load_sweep(sweep_file(clips, "audio: a.wav", name="one"))
    listed = load_sweep(sweep_file(clips, "audio: [a.wav, b.wav]"))
    assert [i.name for i in listed.inputs] == ["a.wav", "b.wav"]
    assert len(listed.runs) == 4 and len({r.run_id for r in listed.runs}) == 4
    # the runs on a.wav keep the ids of a one-file sweep; ids are stable across loads
    assert [r.run_id for r in listed.runs if r.input.name == "a.wav"] == \
        [r.run_id for r in one.runs]
    assert [r.run_id for r in load_sweep(listed.path).runs] == [r.run_id for r in listed.runs]
    # each settings point on every input, the inputs innermost
    assert [r.input.name for r in listed.runs] == ["a.wav", "b.wav"] * 2
    assert listed.runs[0].settings == listed.runs[1].settings

    grid = load_sweep(sweep_file(clips, "normalize_dbfs: null", name="grid",
                                 rest="grid: {lam: [0.1, 1.0], input.audio: [a.wav, b.wav]}\n"))
    assert [r.run_id for r in grid.runs] == [r.run_id for r in listed.runs]

    pattern = load_sweep(sweep_file(clips, "audio: ['clips/*.wav', a.wav]", name="glob"))
    assert [i.name for i in pattern.inputs] == ["clips/c.wav", "clips/d.wav", "a.wav"]
    assert [i.stem for i in pattern.inputs] == ["c", "d", "a"]

    resolved = listed.resolved()
    assert [(i["name"], i["sha256"]) for i in resolved["inputs"]] == [
        (n, file_sha256(clips / n)) for n in ("a.wav", "b.wav")]
    assert "audio" not in resolved["input"] and resolved["input"]["n_fft"] == 64
    assert [r["input"] for r in resolved["runs"]] == ["a.wav", "b.wav"] * 2


def test_segments_per_stem(clips):
    (clips / "a.csv").write_text("0,1,x\n")
    (clips / "b.csv").write_text("0,1,y\n")
    sweep = load_sweep(sweep_file(clips, "audio: [a.wav, b.wav], segments: '{stem}.csv'"))
    assert [i.settings["segments"]["source"] for i in sweep.inputs] == [
        str(clips / "a.csv"), str(clips / "b.csv")]


@pytest.mark.parametrize("input_body, rest, needles", [
    ("audio: 'nothing/*.wav'", "", ["input.audio", "'nothing/*.wav'", "matches no file"]),
    ("audio: [a.wav, 'x*.flac']", "", ["input.audio", "'x*.flac'", "matches no file"]),
    ("audio: [a.wav, clips/a.wav]", "", ["a.wav and clips/a.wav", "stem 'a'"]),
    ("audio: [a.wav, copy.wav]", "", ["a.wav and copy.wav", "same content"]),
    ("audio: []", "", ["input.audio", "empty"]),
    ("audio: [a.wav, b.wav], segments: '{stem}.csv'", "",
     ["input.segments", "for input b.wav", "b.csv"]),
    ("audio: a.wav", "grid: {input.audio: [b.wav]}\n", ["not both"]),
    ("audio: a.wav", "grid: {input.hop: [16, 32]}\n", ["grid.input.hop", "input.audio"]),
    ("normalize_dbfs: null", "grid: {input.audio: []}\n", ["grid.input.audio", "empty"]),
])
def test_bad_corpus_forms_name_the_key(clips, input_body, rest, needles):
    shutil.copyfile(clips / "a.wav", clips / "copy.wav")
    noise_wav(clips / "clips" / "a.wav", 0.2, 5)
    (clips / "a.csv").write_text("0,1,x\n")
    with pytest.raises(SpecblurError) as info:
        load_sweep(sweep_file(clips, input_body, rest=rest))
    message = str(info.value)
    assert "corpus.yaml" in message
    for needle in needles:
        assert needle in message, message


# --- a real sweep over two inputs of different lengths ------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    noise_wav(root / "a.wav", 0.3, 0)
    noise_wav(root / "b.wav", 0.5, 1)
    (root / "a.csv").write_text("0,0.15,sil\n0.15,1,V\n")
    (root / "b.csv").write_text("0,1,V\n")
    path = sweep_file(root, "audio: '?.wav', segments: '{stem}.csv'", rest=EVALUATE + textwrap.dedent("""\
        runs:
          - {lam: 0.1}
          - {lam: 1e4, lambda_on: mse, mode: conserve}
        """))
    sweep = load_sweep(path)
    run_sweep(sweep, out=root / "results")
    return root, sweep, root / "results" / "corpus"


def frames(seconds):
    return 1 + int(seconds * SR) // 32


def test_input_column_audio_and_sweep_yaml(corpus):
    root, sweep, folder = corpus
    runs = pd.read_parquet(folder / "runs.parquet")
    assert list(runs.columns[:2]) == ["run_id", "input"]
    assert all(isinstance(v, str) for v in runs["input"])
    assert dict(zip(runs.run_id, runs.input)) == {r.run_id: r.input.name for r in sweep.runs}
    assert sorted(runs.input) == ["a.wav", "a.wav", "b.wav", "b.wav"]
    assert (runs.status == "done").all()
    assert sf.info(str(folder / "audio" / "a" / "original.wav")).frames == int(0.3 * SR)
    assert sf.info(str(folder / "audio" / "b" / "original.wav")).frames == int(0.5 * SR)
    assert not (folder / "audio" / "original.wav").exists()
    for run in sweep.runs:
        assert sorted(p.name for p in (folder / "audio" / run.run_id).glob("*.wav")) == [
            "epoch_2.wav", "epoch_4.wav"]
    listed = yaml.safe_load((folder / "sweep.yaml").read_text())["inputs"]
    assert [(i["name"], i["stem"], i["sha256"]) for i in listed] == [
        ("a.wav", "a", file_sha256(root / "a.wav")), ("b.wav", "b", file_sha256(root / "b.wav"))]
    assert [i["name"] for i in read_inputs(folder)] == ["a.wav", "b.wav"]


def test_segments_and_faithfulness_use_each_runs_own_input(corpus):
    root, sweep, folder = corpus
    res = specblur.load(folder)
    seg = res.segments.merge(res.runs[["run_id", "input"]], on="run_id")
    low = seg[seg.band == "low"]
    per_run = low.groupby(["run_id", "input"]).n_frames.sum().reset_index()
    want = {"a.wav": frames(0.3), "b.wav": frames(0.5)}  # every frame is labelled
    assert dict(zip(per_run.run_id, per_run.n_frames)) == {
        r.run_id: want[r.input.name] for r in sweep.runs}
    assert set(seg[seg.input == "b.wav"].label) == {"V"}
    assert set(seg[seg.input == "a.wav"].label) == {"sil", "V"}

    assert set(res.faithfulness.run_id) == {r.run_id for r in sweep.runs}
    run = next(r for r in sweep.runs if r.input.name == "b.wav")
    spec = specblur.Spectrogram.from_audio(root / "b.wav", sr=SR, n_fft=64, hop=32)
    r = field_array(read_fields(folder, run.run_id, epochs="last"), "r", spec.mag.shape)
    model = make_model(run.settings["model"], sr=SR, n_fft=64, n_bins=33, seed=0)
    direct = faithfulness(spec, r, model=model, **sweep.evaluate["faithfulness"])
    table = res.faithfulness[res.faithfulness.run_id == run.run_id].reset_index(drop=True)
    pd.testing.assert_frame_equal(table[direct.columns.tolist()], direct)


def test_resume_runs_only_new_inputs(corpus, tmp_path, capsys):
    root, sweep, folder = corpus
    out = tmp_path / "results"
    shutil.copytree(folder, out / "corpus")
    before = {p: p.stat().st_mtime_ns for p in (out / "corpus" / "history").glob("*.parquet")}
    capsys.readouterr()
    run_sweep(sweep, out=out)
    assert "4 runs, 0 to run" in capsys.readouterr().out
    # a third file matches the pattern: only its runs run, the others are kept as they are
    noise_wav(root / "c.wav", 0.2, 2)
    (root / "c.csv").write_text("0,1,V\n")
    try:
        wider = load_sweep(sweep.path)
        run_sweep(wider, out=out)
    finally:
        (root / "c.wav").unlink()
    assert "6 runs, 2 to run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in before} == before
    runs = pd.read_parquet(out / "corpus" / "runs.parquet")
    assert sorted(runs.input) == ["a.wav"] * 2 + ["b.wav"] * 2 + ["c.wav"] * 2
    assert (out / "corpus" / "audio" / "c" / "original.wav").is_file()


def test_report_pools_over_inputs(corpus):
    root, sweep, folder = corpus
    page = report.write_report(folder).read_text()
    assert 'id="pooled"' in page and "Pooled over inputs" in page
    assert (folder / "report" / "pooled-segments.png").is_file()
    assert 'src="audio/a/original.wav"' in page and 'src="audio/b/original.wav"' in page
    assert "2 inputs" in page
    for run in sweep.runs:
        assert f'id="run-{run.run_id}"' in page

    res = specblur.load(folder)
    points = settings_points(res.runs)
    assert points.groupby("point").input.apply(sorted).tolist() == [["a.wav", "b.wav"]] * 2
    faith = pooled_faithfulness(res.faithfulness, res.runs)
    assert (faith.n_inputs == 2).all() and len(faith) == 2
    assert {"map/random median", "map/random q25", "map/random q75"} <= set(faith.columns)
    seg = pooled_segments(res.segments, res.runs)
    v = seg[(seg.label == "V") & (seg.band == "low")]
    assert (v.n_inputs == 2).all() and len(v) == 2
    sil = seg[seg.label == "sil"]
    assert (sil.n_inputs == 1).all()


def test_old_results_folder_still_loads_and_reports(corpus, tmp_path):
    """A folder as written before corpus sweeps: one input, no input column, audio/original.wav."""
    root, sweep, folder = corpus
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    shutil.rmtree(old / "report")
    runs = pd.read_parquet(old / "runs.parquet")
    keep = runs[runs.input == "a.wav"].drop(columns="input")
    keep.to_parquet(old / "runs.parquet")
    resolved = yaml.safe_load((old / "sweep.yaml").read_text())
    first = resolved.pop("inputs")[0]
    resolved["input"].update(audio=str(root / "a.wav"), sha256=first["sha256"])
    resolved["runs"] = [{k: v for k, v in r.items() if k != "input"}
                        for r in resolved["runs"] if r["input"] == "a.wav"]
    (old / "sweep.yaml").write_text(yaml.safe_dump(resolved))
    (old / "audio" / "a" / "original.wav").rename(old / "audio" / "original.wav")
    shutil.rmtree(old / "audio" / "b")

    res = specblur.load(old)
    assert "input" not in res.runs and len(res.runs) == 2
    assert [i["stem"] for i in read_inputs(old)] == [None]
    page = report.write_report(old).read_text()
    assert 'src="audio/original.wav"' in page and 'id="pooled"' not in page
    assert "input <code>a.wav</code>" in page
    for rid in keep.run_id:
        assert f'src="report/{rid}.png"' in page
