"""Values that used to slip through validation (issue 13, items 2, 5 and 7).

Each bad sweep ends with exit status 2, one message naming the file and the key, and
nothing written; degenerate but valid inputs run with a warning.
"""
import textwrap

import numpy as np
import pytest
import soundfile as sf

from specblur.cli import sweep_main

SR = 8000
HEAD = "name: h\ninput: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32}\n"


def write_wav(path, seconds=0.3, silent=False):
    t = np.arange(int(seconds * SR)) / SR
    y = np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * 440.0 * t)
    sf.write(str(path), y, SR, subtype="PCM_16")


def run(tmp_path, capsys, text, *args):
    if not (tmp_path / "a.wav").exists():
        write_wav(tmp_path / "a.wav")
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    capsys.readouterr()
    rc = sweep_main([str(path), "--out", str(tmp_path / "out"), *args])
    out, err = capsys.readouterr()
    return rc, out, err


BAD = {
    "empty lambda_on": (HEAD + "base: {epochs: 2, lambda_on: }\n", ["lambda_on", "empty"]),
    "empty m_init": (HEAD + "base:\n  epochs: 2\n  m_init:\n", ["m_init", "empty"]),
    "empty mode": (HEAD + "runs: [{mode: }]\n", ["mode", "empty"]),
    "empty lr": (HEAD + "base: {lr: }\n", ["lr", "empty"]),
    "empty model": (HEAD + "base: {model: }\n", ["model", "empty"]),
    "duplicate section": (HEAD + "grid: {lam: [1, 2]}\ngrid: {lam: [3]}\n",
                          ["duplicate key 'grid' at line 4", "line 3"]),
    "duplicate setting": (HEAD + "base:\n  lam: 1\n  lam: 2\n",
                          ["duplicate key 'lam' at line 5", "line 4"]),
    "seed too large": (HEAD + "seeds: [18446744073709551616]\n", ["seeds", "2**32"]),
    "negative seed": (HEAD + "seeds: [-1]\n", ["seeds", "-1"]),
    "epochs 1e12": (HEAD + "base: {epochs: 1e12}\n", ["epochs", "below 100000000"]),
    "n_fft 1": ("name: h\ninput: {audio: a.wav, sr: 8000, n_fft: 1, hop: 32}\n",
                ["input.n_fft", "at least 2"]),
    "loud dbfs": ("name: h\ninput: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32, "
                  "normalize_dbfs: 7000}\n", ["input.normalize_dbfs", "[-100, 0]"]),
    "quiet dbfs": ("name: h\ninput: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32, "
                   "normalize_dbfs: -7000}\n", ["input.normalize_dbfs"]),
    "fmax above nyquist": (HEAD + "base: {model: {kind: logmel, n_mels: 4, fmax: 9000}}\n",
                           ["fmax", "Nyquist"]),
    # a YAML date is no JSON value, and the run id is the JSON of the settings
    "plug-in date": (HEAD + "base: {model: {kind: python, factory: 'p:make', "
                     "when: 2024-01-01}}\n", ["model.when", "date 2024-01-01", "quote it"]),
    "plug-in date in grid": (HEAD + "base: {model: {kind: python, factory: 'p:make'}}\n"
                             "grid: {model.when: [1, 2024-01-01]}\n",
                             ["model.when=2024-01-01", "model.when", "quote it"]),
    "plug-in key not text": (HEAD + "base: {model: {kind: python, factory: 'p:make', "
                             "opt: {1: a}}}\n", ["model.opt", "keys must be text"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_value_is_one_error_and_nothing_is_written(tmp_path, capsys, case):
    text, needles = BAD[case]
    rc, out, err = run(tmp_path, capsys, text)
    assert rc == 2, (out, err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert "s.yaml" in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not (tmp_path / "out").exists()


def test_null_means_the_default_where_the_default_is_unset(tmp_path, capsys):
    rc, out, err = run(tmp_path, capsys, HEAD + "base: {epochs: 2, r_max: null, "
                       "snapshot_every: null, param: softplus, m_init: 2}\n", "--dry-run")
    assert rc == 0, err


def test_silent_input_is_refused_before_any_run(tmp_path, capsys):
    write_wav(tmp_path / "a.wav", silent=True)
    rc, out, err = run(tmp_path, capsys, HEAD + "base: {epochs: 2}\n")
    assert rc == 2 and "silent" in err and "a.wav" in err
    assert not (tmp_path / "out").exists()


def test_segments_past_the_audio_give_a_warning(tmp_path, capsys):
    (tmp_path / "late.csv").write_text("start,end,label\n5.0,6.0,V\n")
    text = ("name: h\ninput: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32, "
            "segments: late.csv}\nbase: {epochs: 2}\n")
    rc, out, err = run(tmp_path, capsys, text)
    assert rc == 0, err
    assert "warning" in err and "late.csv" in err and "label no frame" in err


FACTORY = '''
from pathlib import Path

class NoVjp:
    def forward(self, Y):
        return Y

def make(sr, n_fft, n_bins, seed, marker):
    Path(marker).write_text("called")
    return NoVjp()
'''


def test_plugin_without_vjp_stops_before_any_run_and_dry_run_never_calls_it(
        tmp_path, capsys, monkeypatch):
    (tmp_path / "noplugin.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    marker = tmp_path / "called.txt"
    text = HEAD + (f"base: {{epochs: 2, model: {{kind: python, factory: 'noplugin:make', "
                   f"marker: '{marker}'}}}}\n")
    rc, out, err = run(tmp_path, capsys, text, "--dry-run")
    assert rc == 0 and not marker.exists(), err
    rc, out, err = run(tmp_path, capsys, text)
    assert rc == 2 and marker.exists()
    assert "vjp" in err and "noplugin:make" in err
    assert not (tmp_path / "out" / "h" / "runs.parquet").exists()


def test_help_says_sweep_files_are_trusted_code(capsys):
    with pytest.raises(SystemExit):
        sweep_main(["--help"])
    assert "trusted code" in capsys.readouterr().out


# --- the report (issue 13, item 6) ------------------------------------------------------


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A finished one-run sweep whose segment label would be mathtext."""
    from specblur.sweep.config import load_sweep
    from specblur.sweep.runner import run_sweep

    root = tmp_path_factory.mktemp("labelled")
    write_wav(root / "a.wav")
    (root / "s.csv").write_text("start,end,label\n0.0,0.15,$\\foo$\n0.15,0.3,V\n")
    (root / "s.yaml").write_text("name: h\ninput: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32, "
                                 "segments: s.csv}\nbase: {epochs: 2}\n")
    run_sweep(load_sweep(root / "s.yaml"), out=root / "out")
    return root / "out" / "h"


def test_report_draws_labels_that_look_like_mathtext(labelled, capsys):
    from specblur.cli import report_main

    assert report_main([str(labelled), "--jobs", "1"]) == 0
    assert (labelled / "report" / "segments.png").is_file()


def test_report_skips_crafted_run_ids_and_stale_temporaries(labelled, capsys, tmp_path):
    import shutil
    import subprocess
    import sys

    import pandas as pd

    from specblur.cli import report_main

    copy = tmp_path / "copy"
    shutil.copytree(labelled, copy)
    runs = pd.read_parquet(copy / "runs.parquet")
    crafted = runs.iloc[[0]].assign(run_id="../../x")
    pd.concat([runs, crafted]).to_parquet(copy / "runs.parquet")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = copy / "report" / f".0123456789ab.png.{dead}.abc.tmp"  # its writer is gone
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"half a png")
    capsys.readouterr()
    assert report_main([str(copy), "--jobs", "1"]) == 0
    err = capsys.readouterr().err
    assert "skipping run id '../../x'" in err
    assert not stale.exists()
    assert not (tmp_path / "x.png").exists() and not (copy.parent / "x.png").exists()
    assert "../../x" not in (copy / "report.html").read_text()


# --- results folders: I/O faults, concurrency, ownership (issue 13, items 1, 3, 4) ------


def test_out_that_is_a_file_is_one_error(tmp_path, capsys):
    (tmp_path / "out").write_text("not a folder")
    rc, out, err = run(tmp_path, capsys, HEAD + "base: {epochs: 2}\n")
    assert rc == 2 and "Traceback" not in err and "a file is in the way" in err


def test_truncated_runs_table_is_named_then_recovered(tmp_path, capsys):
    text = HEAD + "base: {epochs: 2}\n"
    assert run(tmp_path, capsys, text)[0] == 0
    table = tmp_path / "out" / "h" / "runs.parquet"
    table.write_bytes(table.read_bytes()[:40])
    rc, out, err = run(tmp_path, capsys, text, "--dry-run")
    assert rc == 2 and "runs.parquet" in err and err.count("\n") == 1
    rc, out, err = run(tmp_path, capsys, text)
    assert rc == 0 and "unreadable" in err
    assert len(list(table.parent.glob("runs.parquet.unreadable.*"))) == 1
    import pandas as pd
    assert list(pd.read_parquet(table)["status"]) == ["done"]


def test_a_run_that_failed_on_a_full_disk_is_retried_by_a_plain_rerun(tmp_path, capsys):
    import pandas as pd

    text = HEAD + "base: {epochs: 2}\nruns: [{lam: 1}, {lam: 2}]\n"
    assert run(tmp_path, capsys, text)[0] == 0
    table = tmp_path / "out" / "h" / "runs.parquet"
    runs = pd.read_parquet(table)
    runs.loc[0, ["status", "error"]] = ["failed", "OSError: [Errno 28] No space left on device"]
    runs.loc[1, ["status", "error"]] = ["failed", "RuntimeError: the model broke"]
    runs.to_parquet(table)
    rc, out, err = run(tmp_path, capsys, text, "--dry-run")
    assert "2 runs, 1 to run" in out
    assert run(tmp_path, capsys, text)[0] == 1  # the model's own failure stays failed
    assert sorted(pd.read_parquet(table)["status"]) == ["done", "failed"]


def test_only_dead_writers_temporaries_are_removed(tmp_path, capsys):
    import os
    import subprocess
    import sys

    text = HEAD + "base: {epochs: 2}\n"
    assert run(tmp_path, capsys, text)[0] == 0
    folder = tmp_path / "out" / "h"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    mine = folder / "history" / f".x.parquet.{os.getpid()}.abc123.tmp"
    gone = folder / "history" / f".x.parquet.{dead}.abc123.tmp"
    user = folder / "notes" / ".draft.tmp"
    user.parent.mkdir()
    for path in (mine, gone, user):
        path.write_text("x")
    assert run(tmp_path, capsys, text)[0] == 0
    assert mine.exists() and user.exists() and not gone.exists()


def test_another_sweep_file_with_the_same_name_is_refused(tmp_path, capsys):
    assert run(tmp_path, capsys, HEAD + "base: {epochs: 2}\n")[0] == 0
    other = tmp_path / "other"
    other.mkdir()
    write_wav(other / "a.wav", seconds=0.4)  # other audio under the same sweep name
    (other / "s.yaml").write_text(HEAD + "base: {epochs: 2}\n")
    capsys.readouterr()
    rc = sweep_main([str(other / "s.yaml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "over other inputs" in err
    # a copy of the sweep file over the same audio (a moved checkout) goes on
    copy = tmp_path / "copy"
    copy.mkdir()
    write_wav(copy / "a.wav")
    (copy / "s.yaml").write_text(HEAD + "base: {epochs: 2}\n")
    capsys.readouterr()
    assert sweep_main([str(copy / "s.yaml"), "--out", str(tmp_path / "out")]) == 0


def test_yaml_merge_keys_still_work(tmp_path, capsys):
    text = HEAD + "base: &b {epochs: 2, lam: 1}\nruns:\n  - {<<: *b, lam: 3}\n"
    rc, out, err = run(tmp_path, capsys, text, "--dry-run")
    assert rc == 0 and "1 runs, 1 to run" in out, err


def test_settings_compare_and_serialise_like_their_dict():
    import json

    from specblur.settings import resolve

    s = resolve({"lam": 2})
    assert s == dict(s) and s == resolve({"lam": 2.0}) and s != resolve({"lam": 3})
    assert json.loads(json.dumps(s.as_dict()))["lam"] == 2.0


def test_two_concurrent_sweeps_on_one_folder_keep_every_run(tmp_path):
    import subprocess
    import sys

    import pandas as pd

    write_wav(tmp_path / "a.wav")
    (tmp_path / "s.yaml").write_text(HEAD + "base: {epochs: 3}\ngrid: {lam: [1, 2, 3, 4, 5, 6]}\n")
    # without the folder's lock, both would run every run and race on runs.parquet
    procs = [subprocess.Popen([sys.executable, "-m", "specblur.cli", str(tmp_path / f),
                               "--out", str(tmp_path / "out")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for f in ("s.yaml", "s.yaml")]
    for proc in procs:
        proc.communicate(timeout=240)
    runs = pd.read_parquet(tmp_path / "out" / "h" / "runs.parquet")
    assert sorted(runs["lam"]) == [1, 2, 3, 4, 5, 6]
    assert (runs["status"] == "done").all()


# --- orphans (issue 13, item 8) ---------------------------------------------------------


def _children(pid):
    """Pids of the live processes whose parent is ``pid`` (from /proc)."""
    from pathlib import Path

    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _wait(condition, deadline_s=60.0):
    import time

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)  # polling a bounded condition, not a fixed delay
    return False


def test_workers_exit_when_the_parent_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    write_wav(tmp_path / "a.wav", seconds=2.0)
    (tmp_path / "s.yaml").write_text(HEAD + "base: {epochs: 100000}\nruns: [{lam: 1}, {lam: 2}]\n")
    proc = subprocess.Popen([sys.executable, "-m", "specblur.cli", str(tmp_path / "s.yaml"),
                             "--out", str(tmp_path / "out"), "--jobs", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert _wait(lambda: len(_children(proc.pid)) >= 2), "no workers started"
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the parent alone, as a crash would
        proc.wait(timeout=30)

        def gone():
            return not any(os.path.exists(f"/proc/{pid}") and
                           "Z" not in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1][:3]
                           for pid in workers)
        assert _wait(gone), "orphaned workers kept running"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- plug-in model keys in the runs table (issue 13) ------------------------------------

PLUGIN = '''
class Scale:
    def forward(self, Y):
        return 2.0 * Y

    def vjp(self, Y, g_out):
        return 2.0 * g_out


def make(sr, n_fft, n_bins, seed, **options):
    return Scale()
'''


def test_plugin_keys_of_mixed_types_are_json_text(tmp_path, capsys, monkeypatch):
    import json

    import pandas as pd

    (tmp_path / "mixplugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    values = [3, "a", [1, 2], {"x": 1}, True, None, 2.5]
    text = HEAD + ("base: {epochs: 2, model: {kind: python, factory: 'mixplugin:make'}}\n"
                   f"grid: {{model.opt: {json.dumps(values)}}}\n")
    rc, out, err = run(tmp_path, capsys, text)
    assert rc == 0 and "Traceback" not in err, err
    runs = pd.read_parquet(tmp_path / "out" / "h" / "runs.parquet")
    assert (runs["status"] == "done").all() and len(runs) == len(values)
    assert all(isinstance(v, str) for v in runs["model.opt"])
    assert sorted(map(json.loads, runs["model.opt"]), key=repr) == sorted(values, key=repr)
    assert set(runs["model.factory"]) == {"mixplugin:make"}  # declared keys stay as they are


def test_runs_table_with_an_old_numeric_plugin_column_takes_new_rows(tmp_path, capsys,
                                                                     monkeypatch):
    import pandas as pd

    (tmp_path / "mixplugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = HEAD + "base: {epochs: 2, model: {kind: python, factory: 'mixplugin:make'}}\n"
    assert run(tmp_path, capsys, text + "grid: {model.opt: [3]}\n")[0] == 0
    table = tmp_path / "out" / "h" / "runs.parquet"
    old = pd.read_parquet(table).assign(**{"model.opt": 3})  # as written before JSON text
    old.to_parquet(table)
    rc, out, err = run(tmp_path, capsys, text + "grid: {model.opt: [3, 'a']}\n")
    assert rc == 0 and "2 runs, 1 to run" in out, err
    assert sorted(pd.read_parquet(table)["model.opt"]) == ['"a"', "3"]


# --- I/O faults for real: read-only folders, a full disk, truncated tables (issue 13) ---

_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _PR_CAPBSET_DROP = 1, 2, 24
_RO_MOUNTS = ('while [ "$1" != -- ]; do mount --bind "$1" "$1" && '
              'mount -o remount,bind,ro "$1" "$1" || exit 97; shift; done; shift; exec "$@"')


def _dac_override_dropper():
    """A ``preexec_fn`` by which a child of root loses the capabilities that ignore
    permission bits (from its bounding set, so the program it runs never has them)."""
    import ctypes
    import os

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork

    def drop():
        for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
            if prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                os._exit(98)
    return drop


def _chmod_tree(path, writable):
    import os
    import stat

    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, f) for f in files)]:
            mode = os.stat(name).st_mode
            os.chmod(name, mode | stat.S_IWUSR if writable else
                     mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


class ReadOnly:
    """Makes folders read-only for the command-line processes it starts, for real.

    ``permissions``: the write bits are cleared; a child of root drops CAP_DAC_OVERRIDE,
    so the kernel applies them to it (EACCES) as to any user. ``mount``: the child gets a
    mount namespace of its own in which the folders are read-only bind mounts (EROFS);
    nothing outside the child sees them.
    """

    def __init__(self, how):
        self.how, self.paths = how, []
        self.errno_text = "Permission denied" if how == "permissions" else "Read-only file system"

    def lock(self, *paths):
        for path in paths:
            self.paths.append(path)
            if self.how == "permissions":
                _chmod_tree(path, writable=False)

    def unlock(self):
        if self.how == "permissions":
            for path in self.paths:
                _chmod_tree(path, writable=True)
        self.paths = []

    def run(self, *args):
        import os
        import subprocess
        import sys

        cmd, kwargs = [sys.executable, *map(str, args)], {}
        if self.how == "permissions" and os.geteuid() == 0:
            kwargs["preexec_fn"] = _dac_override_dropper()
        elif self.how == "mount" and self.paths:
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _RO_MOUNTS,
                   "sh", *map(str, self.paths), "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kwargs)

    def sweep(self, *args):
        return self.run("-m", "specblur.cli", *args)

    def report(self, folder):
        return self.run("-c", "import sys; from specblur.cli import report_main; "
                              "sys.exit(report_main())", folder, "--jobs", "1")


@pytest.fixture(params=["permissions", "mount"])
def read_only(request, tmp_path):
    """A :class:`ReadOnly`, or a skip saying why this machine cannot make one."""
    import os
    import shutil

    ro = ReadOnly(request.param)
    if request.param == "mount" and (os.geteuid() != 0 or not shutil.which("unshare")):
        pytest.skip("read-only bind mounts need root and unshare(1)")
    probe = tmp_path / "probe"
    probe.mkdir()
    ro.lock(probe)
    try:
        proc = ro.run("-c", f"open({str(probe / 'x')!r}, 'w')")
    finally:
        ro.unlock()
    if proc.returncode in (97, 98) or ro.errno_text not in proc.stderr:
        pytest.skip(f"cannot make a read-only folder by {request.param} here "
                    f"(status {proc.returncode}: {proc.stderr.strip()[-200:]})")
    yield ro
    ro.unlock()


def _states(folder):
    """{relative path: (inode, mtime_ns, size)} of every file under ``folder``."""
    from pathlib import Path

    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
            for p in Path(folder).rglob("*") if p.is_file()}


def _one_line(proc_or_err):
    err = getattr(proc_or_err, "stderr", proc_or_err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_read_only_results_folder(read_only, tmp_path, capsys):
    """A new sweep, a new run, a rerun with nothing to do and the report, in a read-only
    folder: one line each (the rerun reads and succeeds); writable again, a plain rerun
    goes on and nothing finished is lost."""
    import pandas as pd

    from specblur.cli import report_main

    out, empty = tmp_path / "out", tmp_path / "empty"
    text = HEAD + "base: {epochs: 2}\nruns: [{lam: 1}, {lam: 2}]\n"
    assert run(tmp_path, capsys, text)[0] == 0
    folder, sweep = out / "h", tmp_path / "s.yaml"
    before = _states(folder)
    empty.mkdir()
    read_only.lock(folder, empty)

    proc = read_only.sweep(sweep, "--out", out)  # nothing to do: it only reads
    assert proc.returncode == 0, proc.stderr
    assert "nothing is written" in _one_line(proc) and str(folder) in proc.stderr
    assert "2 runs, 0 to run" in proc.stdout and "done" in proc.stdout
    proc = read_only.sweep(sweep, "--out", out, "--force")  # but --force has work to do
    assert proc.returncode == 1
    assert f"cannot write {folder}: {read_only.errno_text}" in _one_line(proc)

    proc = read_only.sweep(sweep, "--out", empty)  # a new sweep
    assert proc.returncode == 1
    assert f"cannot write {empty / 'h'}: {read_only.errno_text}" in _one_line(proc)

    sweep.write_text(HEAD + "base: {epochs: 2}\nruns: [{lam: 1}, {lam: 2}, {lam: 3}]\n")
    proc = read_only.sweep(sweep, "--out", out)  # a new run
    assert proc.returncode == 1
    assert f"cannot write {folder}: {read_only.errno_text}" in _one_line(proc)

    proc = read_only.report(folder)
    assert proc.returncode == 1 and proc.stderr.startswith("specblur-report: error: ")
    assert f"cannot write {folder}" in _one_line(proc)

    assert _states(folder) == before and not any(empty.iterdir())
    read_only.unlock()
    rc, stdout, err = run(tmp_path, capsys, sweep.read_text())
    assert rc == 0 and "3 runs, 1 to run" in stdout, err
    after, ids = _states(folder), set(pd.read_parquet(folder / "runs.parquet")["run_id"])
    finished = {name: state for name, state in before.items() if any(i in name for i in ids)}
    assert len(finished) > 8 and {k: after[k] for k in finished} == finished
    assert report_main([str(folder), "--jobs", "1"]) == 0
    assert sweep_main([str(sweep), "--out", str(empty)]) == 0


def test_runs_that_failed_on_a_read_only_table_folder_rerun(read_only, tmp_path, capsys):
    import pandas as pd

    text = HEAD + "base: {epochs: 2}\nruns: [{lam: 1}, {lam: 2}]\n"
    assert run(tmp_path, capsys, text)[0] == 0
    folder = tmp_path / "out" / "h"
    (tmp_path / "s.yaml").write_text(text.replace("{lam: 2}]", "{lam: 2}, {lam: 3}]"))
    read_only.lock(folder / "fields")
    proc = read_only.sweep(tmp_path / "s.yaml", "--out", tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    assert f"1 runs failed on an I/O fault ({read_only.errno_text})" in _one_line(proc)
    assert "Traceback" not in proc.stdout
    runs = pd.read_parquet(folder / "runs.parquet")
    failed = runs[runs["status"] == "failed"]
    assert len(failed) == 1 and (runs["status"] == "done").sum() == 2
    assert "fields" in failed["error"].iloc[0] and "\n" not in failed["error"].iloc[0]
    read_only.unlock()
    rc, out, err = run(tmp_path, capsys, (tmp_path / "s.yaml").read_text())
    assert rc == 0 and "3 runs, 1 to run" in out, err
    assert (pd.read_parquet(folder / "runs.parquet")["status"] == "done").all()


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs mounted on ``tmp_path/disk`` (64 MiB until resized), or a skip."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")

    def resize(size):
        subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)

    try:
        yield disk, resize
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_fails_runs_that_a_plain_rerun_finishes(small_disk, tmp_path, capsys):
    """A sweep whose results do not fit on a small tmpfs: the runs that fit finish, the
    others fail on ENOSPC (one line says so), and after the disk is grown a plain rerun
    runs only those; nothing finished is rewritten."""
    import os
    import shutil

    import pandas as pd


    disk, resize = small_disk
    write_wav(tmp_path / "a.wav", seconds=2.0)
    text = HEAD + "base: {epochs: 4, snapshot_every: 2}\ngrid: {lam: [1, 2, 3, 4, 5, 6]}\n"
    (tmp_path / "s.yaml").write_text(text)
    args = [str(tmp_path / "s.yaml"), "--out", str(disk), "--batch", "1"]
    assert sweep_main(args) == 0  # how much the whole sweep takes
    st = os.statvfs(disk)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    shutil.rmtree(disk / "h")
    resize(used // 2)  # about half of the runs fit
    capsys.readouterr()
    assert sweep_main(args) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert err.count("\n") == 1 and "No space left on device" in err, err
    # either the run that did not fit is recorded as failed, or the runs table that would
    # record it did not fit either: both leave the finished runs recorded
    assert "runs failed on an I/O fault" in err or "runs.parquet" in err, err
    assert not list(disk.rglob(".*.tmp"))
    folder = disk / "h"
    runs = pd.read_parquet(folder / "runs.parquet")
    done = set(runs.loc[runs["status"] == "done", "run_id"])
    assert 0 < len(done) < 6, runs[["run_id", "status", "error"]]
    for error in runs.loc[runs["status"] == "failed", "error"]:
        assert "[Errno 28]" in error and "\n" not in error, error
    kept = {k: v for k, v in _states(folder).items() if any(r in k for r in done)}
    resize("64m")
    capsys.readouterr()
    assert sweep_main(args) == 0
    out = capsys.readouterr().out
    assert f"6 runs, {6 - len(done)} to run" in out
    assert (pd.read_parquet(folder / "runs.parquet")["status"] == "done").all()
    after = _states(folder)
    assert {k: after[k] for k in kept} == kept, "a finished run was rewritten"


def test_truncated_fields_and_final_tables_with_segments(tmp_path, capsys):
    """A truncated fields or final table of a finished run: the report names it and draws
    the rest, --dry-run lists the run as pending, and a rerun runs it again (its segment
    table included); the other runs are not touched."""
    import pandas as pd

    from specblur.cli import report_main
    from specblur.errors import SpecblurError
    from specblur.sweep.results import load, read_fields

    (tmp_path / "s.csv").write_text("start,end,label\n0.0,0.15,C\n0.15,0.3,V\n")
    text = ("name: h\ninput: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32, segments: s.csv}\n"
            "base: {epochs: 2}\nruns: [{lam: 1}, {lam: 2}, {lam: 3}]\n")
    assert run(tmp_path, capsys, text)[0] == 0
    folder = tmp_path / "out" / "h"
    ids = list(pd.read_parquet(folder / "runs.parquet")["run_id"])
    damaged = [folder / "fields" / f"{ids[0]}.parquet", folder / "final" / f"{ids[1]}.parquet"]
    for path in damaged:
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])

    def own(states, rid):  # the tables and audio a run writes (segments are rewritten)
        return {k: v for k, v in states.items() if rid in k and k.split("/")[0] in
                ("history", "fields", "final", "outputs", "audio")}

    untouched = own(_states(folder), ids[2])

    capsys.readouterr()
    assert report_main([str(folder), "--jobs", "1"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(str(path) in err for path in damaged), err
    with pytest.raises(SpecblurError, match=str(damaged[1])):  # final/ is read first
        load(folder)
    with pytest.raises(SpecblurError, match=str(damaged[0])):
        load(folder, tables=("fields",))

    rc, out, err = run(tmp_path, capsys, text, "--dry-run")
    assert rc == 0 and "3 runs, 2 to run" in out
    assert all(f"{path} is unreadable" in err for path in damaged), err
    rc, out, err = run(tmp_path, capsys, text)
    assert rc == 0 and "3 runs, 2 to run" in out and "Traceback" not in err, err
    for rid in ids:
        assert len(read_fields(folder, rid, epochs="last"))
        assert (folder / "segments" / f"{rid}.parquet").is_file()
    assert own(_states(folder), ids[2]) == untouched and len(untouched) >= 5
    capsys.readouterr()
    assert report_main([str(folder), "--jobs", "1"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert len(load(folder).segments)


def test_truncated_segments_table_is_named_by_the_report_and_rewritten(tmp_path, capsys):
    from specblur.cli import report_main

    (tmp_path / "s.csv").write_text("start,end,label\n0.0,0.15,C\n0.15,0.3,V\n")
    text = ("name: h\ninput: {audio: a.wav, sr: 8000, n_fft: 64, hop: 32, segments: s.csv}\n"
            "base: {epochs: 2}\n")
    assert run(tmp_path, capsys, text)[0] == 0
    folder = tmp_path / "out" / "h"
    table = next((folder / "segments").glob("*.parquet"))
    table.write_bytes(table.read_bytes()[:100])
    capsys.readouterr()
    assert report_main([str(folder), "--jobs", "1"]) == 2
    assert str(table) in _one_line(capsys.readouterr().err)
    rc, out, err = run(tmp_path, capsys, text)  # the segments step rewrites every table
    assert rc == 0 and "1 runs, 0 to run" in out, err
    assert report_main([str(folder), "--jobs", "1"]) == 0
