"""A local sweep's workers share the cores out again as the runs run out (sweep.cores)."""
import multiprocessing
import os
import textwrap

import numba
import numpy as np
import pytest

from specblur.sweep import cores
from specblur.sweep.config import load_sweep
from specblur.sweep.runner import run_sweep

CORES = cores.usable()


@pytest.fixture
def worker():
    """This process as a worker that follows a share; numba's threads restored after."""
    before = numba.get_num_threads()
    value = multiprocessing.get_context("spawn").Value("i", 1, lock=False)
    cores.join(value)
    yield value
    cores._shared = None
    numba.set_num_threads(before)


def test_the_share_grows_only_once_fewer_batches_are_left_than_workers():
    share = cores.CoreShare(multiprocessing.get_context("spawn"), cores=8, jobs=3)
    assert share.threads == 2 and share.value.value == 2
    assert [share.left(n) for n in (10, 3, 2, 1, 0)] == [2, 2, 4, 8, 8]
    assert share.value.value == 8
    one_core = cores.CoreShare(multiprocessing.get_context("spawn"), cores=1, jobs=2)
    assert one_core.threads == 1 and one_core.left(1) == 1


@pytest.mark.skipif(CORES < 2, reason="needs two cores to share")
def test_a_worker_takes_up_a_new_share_between_epochs(worker):
    assert numba.get_num_threads() == 1
    worker.value = 2
    cores.follow()
    assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    worker.value = 1
    cores.follow()
    assert numba.get_num_threads() == 1


def test_a_torch_imported_after_the_share_changed_follows_it(worker):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # as a plug-in's torch would start, from OMP_NUM_THREADS
        cores.follow()
        assert torch.get_num_threads() == numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_follow_does_nothing_outside_a_worker():
    before = numba.get_num_threads()
    cores._shared = None
    cores.follow()
    assert numba.get_num_threads() == before


PLUGIN = '''
import numba
import numpy as np

from specblur.sweep import cores


class Model:
    """The identity, noting numba's threads at every forward call."""

    supports_batch = True

    def __init__(self, log, bump_at):
        self.log, self.bump_at, self.calls = log, bump_at, 0

    def forward(self, Y):
        self.calls += 1
        if self.calls == self.bump_at:  # as the parent publishes a larger share
            cores._shared.value = 2
        threads = numba.get_num_threads()
        if threads != getattr(self, "seen", None):  # a line per change
            self.seen = threads
            with open(self.log, "a") as f:
                f.write(f"{threads}\\n")
        return np.asarray(Y)

    def vjp(self, Y, g_out):
        return np.asarray(g_out)


def make(sr, n_fft, n_bins, seed, log="", bump_at=0):
    return Model(log, bump_at)
'''


def _workers_import_from(folder, monkeypatch):
    """Modules in ``folder`` importable here and in spawned worker processes."""
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder),
                                                      os.environ.get("PYTHONPATH", "")]))


def _plugin_sweep(folder, epochs, **model):
    """A one-run sweep file of the PLUGIN model (its own module: an imported one stays
    cached) on a small spectrogram; returns it and the plug-in's log of threads."""
    plugin = f"threads_{folder.name}"
    (folder / f"{plugin}.py").write_text(PLUGIN)
    np.save(folder / "x.npy", np.random.default_rng(0).random((9, 6)))
    log = folder / "threads.log"
    keys = "".join(f", {key}: {value}" for key, value in model.items())
    (folder / "s.yaml").write_text(textwrap.dedent(f"""\
        name: threads
        input: {{spectrogram: x.npy, sr: 16000, n_fft: 16}}
        base: {{m_init: 2.0, lam: 0.01, epochs: {epochs},
                model: {{kind: python, factory: "{plugin}:make", log: "{log}"{keys}}}}}
        runs: [{{}}]
        """))
    return load_sweep(folder / "s.yaml"), log


@pytest.mark.skipif(CORES < 2, reason="needs two cores to share")
def test_a_lone_batch_in_a_worker_pool_gets_every_core(tmp_path, monkeypatch):
    """Two workers, one run: the busy worker runs on all the cores, the run as usual."""
    _workers_import_from(tmp_path, monkeypatch)
    sweep, log = _plugin_sweep(tmp_path, epochs=3)
    runs = run_sweep(sweep, out=tmp_path / "out", jobs=2)
    assert list(runs["status"]) == ["done"]
    assert log.read_text().split() == [str(CORES)]


@pytest.mark.skipif(CORES < 2, reason="needs two cores to share")
def test_the_last_batch_takes_the_cores_of_the_worker_that_ran_out(monkeypatch):
    """Two workers, two batches: once the short one is done, the parent gives the long
    one's worker every core (cores_probe waits for that, 60 s at most)."""
    import cores_probe
    from specblur.sweep.runner import _execute_local

    _workers_import_from(os.path.dirname(cores_probe.__file__), monkeypatch)
    rows = list(_execute_local([["short", CORES], ["long", CORES]], 2,
                               work=cores_probe.threads_when_done))
    half = CORES // 2
    assert sorted(rows, key=str) == [{"long": [half, CORES]}, {"short": [half, half]}]


@pytest.mark.skipif(CORES < 2, reason="needs two cores to share")
def test_a_fit_in_a_worker_takes_up_the_share_between_epochs(tmp_path, monkeypatch, worker):
    """The sweep's fits call cores.follow between epochs: the plug-in raises the share at
    its third forward call (as the parent would), and the epochs after it get 2 threads."""
    monkeypatch.syspath_prepend(str(tmp_path))
    sweep, log = _plugin_sweep(tmp_path, epochs=6, bump_at=3)
    runs = run_sweep(sweep, out=tmp_path / "out", jobs=1)
    assert list(runs["status"]) == ["done"]
    assert log.read_text().split() == ["1", str(min(2, numba.config.NUMBA_NUM_THREADS))]
