"""``specblur-report`` (issue 5): the plots, ``report.html``, the command line, and the page
rendered in a real browser (headless Chromium through Selenium).

The module builds one small results folder by running a real sweep (a 0.3 s tone at
8 kHz, three runs of six epochs, snapshots every three, each evaluated by the deletion test
of SPEC §9.5) and reuses it.
"""
import re
import shutil
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from matplotlib.figure import Figure

import specblur
from specblur import report
from specblur.cli import report_main
from specblur.schema import METRICS
from specblur.sweep.results import input_magnitude, read_fields, read_geometry
from specblur.sweep.runner import run_sweep
from specblur.sweep.config import load_sweep

SR = 8000
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


# --- helpers ----------------------------------------------------------------------------


def write_wav(path, seconds=0.3, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * np.sin(2 * np.pi * 1320.0 * t)
    sf.write(str(path), y, sr, subtype="PCM_16")
    return path


#: A small deletion test: two test radii, three fractions, two random draws.
EVALUATE = "evaluate: {faithfulness: {radii: [4, 8], fractions: [0.25, 0.5, 0.75], n_random: 2}}\n"


def make_results(root, source="audio: a.wav", name="tiny", evaluate=""):
    """Run a three-run sweep under ``root`` and return its results folder."""
    root = Path(root)
    if source.startswith("audio"):
        write_wav(root / "a.wav")
    sweep = root / f"{name}.yaml"
    sweep.write_text(textwrap.dedent(f"""\
        name: {name}
        input: {{{source}, sr: 8000, n_fft: 64, hop: 32}}
        base: {{epochs: 6, snapshot_every: 3, m_init: 2.0, lr: 1.0}}
        runs:
          - {{lam: 0.01}}
          - {{lam: 1e4, lambda_on: mse, mode: conserve}}
          - {{lam: 0.1, param: relu, model: {{kind: logmel, n_mels: 8}}}}
        """) + evaluate)
    run_sweep(load_sweep(sweep), out=root / "results")
    return root / "results" / name


class PageParser(HTMLParser):
    """Collects the tags, attributes and table rows of a page."""

    def __init__(self):
        super().__init__()
        self.tags = []            # (tag, attrs)
        self.table_rows = []      # body rows of each table, in page order
        self._in_tbody = False

    @property
    def body_rows(self):
        """Body rows of the first table: the table of runs."""
        return self.table_rows[0] if self.table_rows else 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.table_rows.append(0)
        elif tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self.table_rows[-1] += 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_tbody = False

    def attrs(self, tag):
        return [a for t, a in self.tags if t == tag]

    def links(self):
        return [a[key] for _, a in self.tags for key in ("src", "href") if key in a]


def parse(page):
    parser = PageParser()
    parser.feed(Path(page).read_text(encoding="utf-8"))
    return parser


def snapshot_wavs(folder):
    return sorted((folder / "audio").glob("*/epoch_*.wav"))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A real results folder, its runs evaluated, with its report written."""
    folder = make_results(tmp_path_factory.mktemp("report"), evaluate=EVALUATE)
    page = report.write_report(folder)
    return folder, page


# --- the files --------------------------------------------------------------------------


def test_report_files(results):
    folder, page = results
    assert page == folder / "report.html" and page.is_file()
    runs = pd.read_parquet(folder / "runs.parquet")
    assert len(runs) == 3 and set(runs["status"]) == {"done"}
    names = [*runs["run_id"], *(f"{rid}-faithfulness" for rid in runs["run_id"]), "sweep",
             "faithfulness"]
    for name in names:
        png = folder / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert png.stat().st_size > 10_000
    assert not list(folder.rglob(".*.tmp")), "a temporary file was left behind"


def test_table_has_a_row_per_run(results):
    folder, page = results
    runs = pd.read_parquet(folder / "runs.parquet")
    parsed = parse(page)
    assert parsed.body_rows == len(runs)
    text = page.read_text(encoding="utf-8")
    for rid in runs["run_id"]:
        assert f'id="run-{rid}"' in text
        assert f'href="#run-{rid}"' in text
    # the settings that differ between runs, status and final metrics are columns
    header = re.search(r"<thead>(.*?)</thead>", text, re.S).group(1)
    for col in ("lam", "lambda_on", "mode", "param", "status", "loss", "mse", "m_mean"):
        assert f">{col}<" in header, col


def test_links_are_relative_and_resolve(results):
    folder, page = results
    links = parse(page).links()
    assert links
    for link in links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc, link
        if link.startswith("#"):
            continue
        assert not link.startswith("/"), link
        assert ".." not in Path(unquote(parts.path)).parts, link
        assert (folder / unquote(parts.path)).is_file(), link
    assert str(folder) not in page.read_text(encoding="utf-8")


def test_images_and_audio_players(results):
    folder, page = results
    parsed = parse(page)
    runs = pd.read_parquet(folder / "runs.parquet")
    srcs = [a["src"] for a in parsed.attrs("img")]
    assert sorted(srcs) == sorted([f"report/{rid}.png" for rid in runs["run_id"]]
                                  + [f"report/{rid}-faithfulness.png" for rid in runs["run_id"]]
                                  + ["report/sweep.png", "report/faithfulness.png"])
    audio = [a["src"] for a in parsed.attrs("audio")]
    wavs = snapshot_wavs(folder)
    assert len(wavs) == 3 * 2                          # epochs 3 and 6 of three runs
    assert len(audio) == 1 + len(wavs)
    assert "audio/a/original.wav" in audio
    assert sorted(a for a in audio if a != "audio/a/original.wav") == sorted(
        p.relative_to(folder).as_posix() for p in wavs)
    assert all("controls" in a for a in parsed.attrs("audio"))


def test_failed_run_escaping_and_missing_files(tmp_path, results):
    """A failed run (no tables) shows its error, escaped; it has no plot and no players."""
    folder, _ = results
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shutil.rmtree(copy / "report")
    (copy / "report.html").unlink()
    runs = pd.read_parquet(copy / "runs.parquet")
    failed = runs.iloc[[0]].copy()
    failed["run_id"] = "0123456789ab"
    failed["status"] = "failed"
    failed["error"] = "RuntimeError: the model broke <script>alert(1)</script>"
    for col in METRICS:
        failed[col] = np.nan
    pd.concat([runs, failed], ignore_index=True).to_parquet(copy / "runs.parquet")
    page = report.write_report(copy)
    parsed = parse(page)
    assert parsed.body_rows == len(runs) + 1
    text = page.read_text(encoding="utf-8")
    assert "<script>" not in text
    assert "RuntimeError: the model broke &lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert 'id="run-0123456789ab"' in text
    assert not (copy / "report" / "0123456789ab.png").exists()
    assert len(parsed.attrs("img")) == 2 * len(runs) + 2  # runs, curves, sweep, faithfulness
    assert (copy / "report" / "sweep.png").is_file()


def test_spectrogram_input_and_no_input(tmp_path):
    """A ``.npy`` input has no audio: the report still works, and without the input file
    the spectrograms before and after the blur are left out with a note."""
    X = np.abs(specblur.audio.stft(np.sin(np.arange(2400) * 0.3), 64, 32))
    np.save(tmp_path / "x.npy", X)
    folder = make_results(tmp_path, source="spectrogram: x.npy", name="npy")
    page = report.write_report(folder)
    parsed = parse(page)
    assert parsed.attrs("audio") == []
    assert len(parsed.attrs("img")) == 3 + 1
    assert "no original audio" in page.read_text(encoding="utf-8")
    np.testing.assert_allclose(input_magnitude(folder), X)
    (tmp_path / "x.npy").unlink()
    assert input_magnitude(folder) is None
    res = specblur.load(folder)
    fig = report.plot_run(res.history, res.fields, res.outputs, res.runs.iloc[0], X=None,
                          **read_geometry(folder))
    notes = [t.get_text() for a in fig.axes for t in a.texts]
    assert any("no input audio or spectrogram" in n for n in notes), notes


def test_input_magnitude_from_original_wav(tmp_path, results):
    """Without the input file, X is the STFT of audio/a/original.wav (the input as analysed)."""
    folder, _ = results
    exact = input_magnitude(folder)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    sweep = (copy / "sweep.yaml").read_text()
    (copy / "sweep.yaml").write_text(sweep.replace(str(folder.parent.parent / "a.wav"),
                                                   str(tmp_path / "gone.wav")))
    from_wav = input_magnitude(copy)
    assert from_wav.shape == exact.shape == (33, 1 + int(0.3 * SR) // 32)
    np.testing.assert_allclose(from_wav, exact, atol=1e-5 * exact.max())


# --- the plotting API -------------------------------------------------------------------


def test_plot_functions_take_the_dataframes_of_load(results):
    folder, _ = results
    res = specblur.load(folder)
    geo = read_geometry(folder)
    assert geo == {"sr": 8000, "n_fft": 64, "hop": 32}
    X = input_magnitude(folder)
    run = res.runs.iloc[1]
    fig = report.plot_run(res.history, res.fields, res.outputs, run, X=X, **geo)
    assert isinstance(fig, Figure)
    assert "lam=1e+04" in fig._suptitle.get_text() and run["run_id"] in fig._suptitle.get_text()
    labels = {a.get_xlabel() for a in fig.axes} | {a.get_ylabel() for a in fig.axes}
    assert {"time (s)", "frequency (Hz)", "epoch (updates)", "radius r (bins)"} <= labels
    titles = " | ".join(a.get_title() for a in fig.axes)
    for word in ("loss parts", "gradient parts", "radius field", "radius histogram",
                 "g_mse", "g_ent", "output distribution", "before the blur", "after the blur"):
        assert word in titles, word
    # the radius field marks r <= 1 and has a colour bar (one per heatmap)
    field_ax = next(a for a in fig.axes if a.get_title().startswith("radius field"))
    legend = field_ax.get_legend().get_texts()[0].get_text()
    assert legend.startswith("r ≤ 1")
    assert sum(a.get_ylabel().startswith(("radius r", "magnitude (dB")) for a in fig.axes) >= 3
    # the time axis reaches the input's duration: frame t is at t * hop / sr seconds
    T = X.shape[1]
    assert field_ax.get_xlim()[1] == pytest.approx((T - 0.5) * 32 / 8000)
    assert field_ax.get_ylim()[1] == pytest.approx((33 - 0.5) * 8000 / 64)

    sweep = report.plot_sweep(res.runs, res.history, title="tiny")
    assert isinstance(sweep, Figure) and len(sweep.axes) >= 4
    assert sweep.axes[0].get_xlabel() == "λ (lam)"


def test_single_panels_make_their_own_figure(results):
    folder, _ = results
    res = specblur.load(folder)
    rid = res.runs.run_id.iloc[0]
    hist = res.history[res.history.run_id == rid]
    fields = read_fields(folder, rid, epochs="last")
    assert set(fields["epoch"]) == {6}
    ax = report.plot_loss_parts(hist, res.runs.iloc[0])
    assert ax.get_xlabel() == "epoch (updates)"
    ax = report.plot_radius_field(fields, sr=8000, n_fft=64, hop=32)
    assert ax.get_xlabel() == "time (s)"
    ax = report.plot_radius_field(fields)                # without the geometry: frames
    assert ax.get_xlabel() == "frame"
    assert set(read_fields(folder, rid)["epoch"]) == {3, 6}
    assert set(read_fields(folder, rid, epochs="all")["epoch"]) == {3, 6}


# --- faithfulness (SPEC §9.5) ------------------------------------------------------------


def test_faithfulness_section_and_table(results):
    folder, page = results
    res = specblur.load(folder)
    text = page.read_text(encoding="utf-8")
    assert '<h2 id="faithfulness">Faithfulness (SPEC §9.5)</h2>' in text
    parsed = parse(page)
    assert len(parsed.table_rows) == 2
    assert parsed.table_rows[1] == len(res.runs) * 2      # one row per run and R
    section = text[text.index('id="faithfulness"'):text.index("<section")]
    header = re.search(r"<thead>(.*?)</thead>", section, re.S).group(1)
    for col in ("R", "F", "map/random", "map/gradient", "anti/random"):
        assert f">{col}<" in header, col
    for rid in res.runs["run_id"]:
        table = res.faithfulness[res.faithfulness.run_id == rid]
        summary = specblur.faithfulness_summary(table, F=0.5)
        for R, row in summary.iterrows():
            cells = [report.plots.fmt(v) for v in (R, 0.5, row["map/random"],
                                                   row["map/gradient"], row["anti/random"])]
            assert f'href="#run-{rid}"><code>{rid}</code></a></td>' + "".join(
                f"<td>{c}</td>" for c in cells) in section, (rid, R)
        run_section = text[text.index(f'id="run-{rid}"'):]
        run_section = run_section[:run_section.index("</section>")]
        assert f'src="report/{rid}-faithfulness.png"' in run_section


def test_faithfulness_plots(results):
    folder, _ = results
    table = specblur.load(folder, tables=("faithfulness",)).faithfulness
    rid = table.run_id.iloc[0]
    fig = report.plot_faithfulness(table, run=rid)
    assert [a.get_title() for a in fig.axes] == ["deletion curves at test radius R = 4",
                                                 "deletion curves at test radius R = 8"]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[:3] == ["map", "anti", "random"] and "random ± std" in labels
    assert fig.axes[0].get_xlabel().startswith("F")
    with pytest.raises(specblur.SpecblurError, match="several runs"):
        report.plot_faithfulness(table)
    fig = report.plot_faithfulness_summary(table)
    assert len(fig.axes) == 2 and all(a.get_yscale() == "log" for a in fig.axes)
    ratios = report.faithfulness_ratios(table)
    assert list(ratios.columns[:3]) == ["run_id", "R", "F"] and (ratios.F == 0.5).all()
    assert len(ratios) == 2 * table.run_id.nunique()


# --- the command line -------------------------------------------------------------------


def test_main_writes_the_report(tmp_path, results, capsys):
    folder, _ = results
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shutil.rmtree(copy / "report")
    (copy / "report.html").unlink()
    assert report_main([str(copy), "--jobs", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(copy / "report.html")
    assert len(list((copy / "report").glob("*.png"))) == 3 + 3 + 2


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_main_bad_folder(tmp_path, capsys, make):
    target = tmp_path / "nope"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("x")
    assert report_main([str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("specblur-report: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and str(target) in err
    assert not (target / "report.html").exists() if target.is_dir() else True


def test_main_bad_jobs(results, capsys):
    folder, _ = results
    assert report_main([str(folder), "--jobs", "0"]) == 2
    assert "--jobs" in capsys.readouterr().err


# --- a real browser ---------------------------------------------------------------------


def _browser():
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip("headless Chromium not installed: apt-get install chromium chromium-driver "
                    "(.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium not installed (the test extra has it)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    return webdriver, Service(executable_path=str(CHROMEDRIVER)), options


def test_page_renders_in_headless_chromium(results, tmp_path):
    folder, page = results
    webdriver, service, options = _browser()
    from selenium.webdriver.support.ui import WebDriverWait

    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1400,2000",
                f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(page.resolve().as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "return document.readyState === 'complete' && "
            "Array.from(document.images).every(i => i.complete)"))
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        runs = pd.read_parquet(folder / "runs.parquet")
        assert len(images) == 2 * len(runs) + 2
        assert all(width > 0 for _, width in images), images

        # every player is there, points at an existing file, and the browser can decode it
        audio = driver.execute_script(
            "return Array.from(document.querySelectorAll('audio[controls]'))"
            ".map(a => a.getAttribute('src'))")
        assert len(audio) == 1 + len(snapshot_wavs(folder))
        for src in audio:
            assert (folder / unquote(src)).is_file(), src
        driver.execute_script(
            "document.querySelectorAll('audio').forEach(a => {a.preload = 'metadata'; a.load();})")
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "return Array.from(document.querySelectorAll('audio'))"
            ".every(a => a.readyState >= 1 || a.error)"))
        states = driver.execute_script(
            "return Array.from(document.querySelectorAll('audio'))"
            ".map(a => [a.getAttribute('src'), a.error && a.error.code, a.duration])")
        for src, error, duration in states:
            assert error is None, (src, error)
            assert duration == pytest.approx(0.3, abs=0.01), (src, duration)
        driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
