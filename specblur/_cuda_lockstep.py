"""The lockstep driver of ``fit`` and ``fit_batch`` with ``device="cuda"``: epochs on the GPU.

The CPU driver (``fitting._Lockstep``) keeps the fields in host memory. This one keeps
everything an epoch touches on the device: the inputs ``X``, each run's ``m``, ``m_next``,
``r``, ``dr/dm``, Adam moments, the blurred ``Y``, the cotangent ``G``, ``dL/dr``, the
snapshot fields and the smoothness term's buffers, all as zero-padded ``(B, K, T_max)``
stacks with one slot per run, and each run's settings and state as small tables
(``kernels.gpu_objective``). An epoch is a fixed sequence of kernel launches that take the
epoch number as a scalar: radius, the blur per boundary mode, the model calls and the MSE,
the total variation, the model VJPs, the blur VJP per mode and the rest of the objective
with the update. With models that take device arrays, nothing goes between host and device
during it; models that do not are called on host copies, and a run that leaves moves
another's slot (an upload of its input).

The host waits for the device only at the epochs where some run logs a row, takes a
snapshot or ends: it then copies the state table (one small array with every run's
history row and status) and, for snapshots and finished runs, their fields. A run whose
``m``, ``r`` or loss stops being finite dies on the device at that epoch and its slot is
left alone from then on; the host learns of it at its next such copy and records the
run as diverged at the epoch it died, with the ``m`` and ``r`` of that epoch, so the
result is the CPU's. Until then the run's slot still goes through the blur and the
model (its cotangent is zero), which costs time but changes nothing. The blur kernels
take each slot's number of frames, so they skip the padding after a shorter run's
frames; nothing reads the padding of ``Y``, ``dL/dr`` or the other stacks.

Models: one whose ``supports_device`` is True takes the driver's device arrays (numba
device arrays, which also expose ``__cuda_array_interface__``) and may return device
arrays or anything with ``__cuda_array_interface__`` (a torch CUDA tensor), wrapped with
``numba.cuda.as_cuda_array`` without a copy. A model with a ``to_device`` method is asked
to move to the GPU first (the speaker encoder, when torch has CUDA). Other models are
called on host copies, as on the CPU, with their outputs and VJPs copied back.
"""
from __future__ import annotations

import time

import numpy as np

from .errors import SpecblurError
from .kernels import for_device
from .kernels._cuda import is_device_array
from .models import call_key


class CudaLockstep:
    """Runs that go through their epochs together on the GPU (``fitting._Lockstep``'s twin).

    Parameters
    ----------
    items : list of fitting._Prepared
        The runs' checked inputs, settings and models.
    descent : type
        ``fitting._Descent``, which keeps each run's records (built with ``buffers=False``).
    """

    def __init__(self, items, descent):
        backend = for_device("cuda")
        from .kernels import gpu_objective

        self.k = k = gpu_objective
        self.cuda = cuda = k.cuda
        self.blur = backend.kernels
        models = {id(item.model): item.model for item in items}
        for model in models.values():  # before the reference outputs are computed
            if callable(getattr(model, "to_device", None)):
                model.to_device("cuda")
        self.models = {key: model if getattr(model, "supports_device", False) is True
                       else _HostModel(model, cuda) for key, model in models.items()}
        self.runs = [descent(item, buffers=False) for item in items]
        B = len(self.runs)
        K = items[0].X.shape[0]
        self.T = T = max(run.T for run in self.runs)
        shape = (B, K, T)
        self.groups = {}  # mode code -> the runs of that mode, in slot order
        for run in sorted(self.runs, key=lambda run: run.mode):
            self.groups.setdefault(run.mode, []).append(run)
        X, M = np.zeros(shape), np.zeros(shape)
        self.table_h = np.zeros((B, len(k.TABLE)))
        self.state_h = k.new_state(B)
        slot = 0
        for group in self.groups.values():
            for run in group:
                run.slot = slot
                X[slot, :, :run.T] = run.X
                M[slot, :, :run.T] = run.m
                self.table_h[slot] = _table_row(k, run)
                self.state_h[slot, k.S_DEAD] = k.ALIVE
                slot += 1
        self.nslots = B
        self.X, self.M = cuda.to_device(X), cuda.to_device(M)
        # r = 1 (the identity) in the padding, which the blur kernels skip
        self.R = cuda.to_device(np.ones(shape))
        self.G = cuda.to_device(np.zeros(shape))
        self.M_next, self.DRDM, self.Y, self.dR, self.G_mse, self.G_ent = (
            cuda.device_array(shape) for _ in range(6))
        self.dX = cuda.device_array((0, 0, 0))  # dL/dX is never read: the kernel skips it
        self.d2 = cuda.device_array((B, K + 2, T))
        self.P0, self.P1 = (cuda.device_array((B, K + 1, T)) for _ in range(2))
        dummy = (1, 1, 1)
        adam = any(run.adam for run in self.runs)
        self.mom1, self.mom2 = (cuda.to_device(np.zeros(shape if adam else dummy))
                                for _ in range(2))
        self.has_tv = any(run.tv > 0 for run in self.runs)
        self.U, self.G_tv = (cuda.device_array(shape if self.has_tv else dummy)
                             for _ in range(2))
        self.moving = [self.X, self.M, self.M_next, self.R, self.DRDM] + (
            [self.mom1, self.mom2] if adam else [])
        self.table, self.state = cuda.to_device(self.table_h), cuda.to_device(self.state_h)
        self.frames = cuda.to_device(self._frames())
        self.calls = None  # (call, its runs) per model call; rebuilt when runs leave

    # --- the epochs ------------------------------------------------------------------

    def run(self, callback):
        """Go through the epochs; return each run's ``FitResult``, in the order of ``items``."""
        active = list(self.runs)
        start = time.perf_counter()
        n = 0
        with np.errstate(all="ignore"):  # as on the CPU: non-finite values are statuses
            while active:
                plans = {run: run.plan(n) for run in active}
                self._epoch(n, active)
                if any(last or log or snapshot for last, _, _, log, snapshot in plans.values()):
                    self._sync(n, active, plans, start)
                if active and callback is not None:
                    callback(n + 1)
                n += 1
        return [run.result() for run in self.runs]

    def _epoch(self, n, active):
        """Launch epoch ``n`` of every run in a slot (no copy to or from the host)."""
        k, blur = self.k, self.blur
        k.radius(n, self.M, self.M_next, self.R, self.DRDM, self.table, self.state,
                 self.nslots)
        spans = self._spans()
        for mode, lo, hi in spans:
            blur.blur_forward(self.X[lo:hi], self.R[lo:hi], mode, self.Y[lo:hi], self.d2[lo:hi],
                              self.frames[lo:hi])
        calls = self._forward(n, active)
        if self.has_tv:
            k.total_variation(n, self.R, self.DRDM, self.U, self.G_tv, self.table, self.state,
                              self.nslots)
        self._vjp(calls)
        for mode, lo, hi in spans:
            blur.blur_backward(self.X[lo:hi], self.R[lo:hi], self.G[lo:hi], mode,
                               self.dX[lo:hi], self.dR[lo:hi], self.P0[lo:hi], self.P1[lo:hi],
                               self.frames[lo:hi])
        k.descend(n, self.M, self.R, self.DRDM, self.dR, self.G_tv, self.mom1, self.mom2,
                  self.Y, self.G_mse, self.G_ent, self.M_next, self.table, self.state,
                  self.nslots)

    def _spans(self):
        """``(mode, first slot, end slot)`` for each mode with runs left."""
        return [(mode, group[0].slot, group[0].slot + len(group))
                for mode, group in self.groups.items() if group]

    def _forward(self, n, active):
        """Call each model once per group of its runs (``fitting._model_forward``) and
        score the outputs; returns what :meth:`_vjp` needs."""
        if self.calls is None:  # the runs and their slots change only in _sync
            groups = {}
            for run in active:
                groups.setdefault(call_key(run.model, run.T, id(run)), []).append(run)
            self.calls = [(_Call(self, group), group) for group in
                          (sorted(group, key=lambda run: run.slot) for group in groups.values())]
        calls = []
        for call, group in self.calls:
            Y = call.input(self)
            model = self.models[id(group[0].model)]
            out = model.forward(Y) if call.lengths is None else \
                model.forward(Y, lengths=call.lengths)
            out = self.k.stacked(self._device(out))
            if out.shape != call.ref.shape:
                raise SpecblurError(f"the model's output has shape {tuple(out.shape)}, its "
                                    f"reference {tuple(call.ref.shape)}")
            self.k.mse(n, out, call.ref, call.g_out, call.slots, self.table, self.state)
            for i, run in enumerate(group):
                run.out = out[i]  # for a snapshot at this epoch
            calls.append((call, model, Y))
        return calls

    def _vjp(self, calls):
        """Pull each call's cotangent back through its model into the stack ``G``."""
        for call, model, Y in calls:
            g = call.g_out if call.batch else call.g_out[0]
            grad = model.vjp(Y, g) if call.lengths is None else \
                model.vjp(Y, g, lengths=call.lengths)
            self.k.scatter(self.k.stacked(self._device(grad)), call.slots, call.lengths_dev,
                           self.G)

    def _device(self, a):
        """A model's answer as a numba device array, without a copy where it is on the GPU."""
        if isinstance(a, np.ndarray):  # a host answer: copied over
            return self.cuda.to_device(np.ascontiguousarray(a, dtype=np.float64))
        if is_device_array(a) and hasattr(a, "copy_to_host"):  # numba's own
            return a
        if getattr(a, "requires_grad", False):  # a torch tensor still in a graph
            a = a.detach()
        if hasattr(a, "__cuda_array_interface__"):
            # version 2 (torch's) names no stream: the work is ordered on the default stream
            return self.cuda.as_cuda_array(a, sync=False)
        raise SpecblurError(f"a model with supports_device returned {type(a).__name__}, "
                            "which is neither a NumPy array nor a CUDA array")

    # --- the host's side ----------------------------------------------------------------

    def _sync(self, n, active, plans, start):
        """Read every run's state after epoch ``n``: record rows, snapshots and ends."""
        k = self.k
        state = self.state.copy_to_host()  # waits for the epoch's kernels
        seconds = time.perf_counter() - start
        ended = []
        for run in list(active):
            row = state[run.slot]
            if row[k.S_DEAD] >= 0:  # it died at that epoch: a row of NaN there
                run.record(int(row[k.S_DEAD]), None, seconds, True)
                ended.append(run)
                continue
            last, _, _, log, snapshot = plans[run]
            values = tuple(float(v) for v in row[k.S_ROW:]) if log else None
            snap = self._snapshot(run) if snapshot else None
            run.record(n, (values, snap), seconds, log)
            if last:
                ended.append(run)
        if not ended:
            return
        for run in ended:
            snap = run.snapshots.get(n)  # the last epoch's fields, if already on the host
            run.m, run.r = (snap["m"], snap["r"]) if snap is not None else \
                (self._field(self.M, run), self._field(self.R, run))
            active.remove(run)
            self._leave(run, state)
        self.nslots = max((run.slot for run in active), default=-1) + 1
        self.calls = None
        self.state.copy_to_device(state)
        self.table.copy_to_device(self.table_h)
        self.frames.copy_to_device(self._frames())

    def _frames(self):
        """Each slot's own frames, for the blur kernels: the settings table's ``T``."""
        return self.table_h[:, self.k.P_T].astype(np.int64)

    def _field(self, stack, run):
        """Run ``run``'s own frames of a device stack, on the host."""
        return np.ascontiguousarray(stack[run.slot].copy_to_host()[:, :run.T])

    def _snapshot(self, run):
        unit = run.param.radius_is_m
        out = run.out.copy_to_host()
        return run.snapshot(self._field(self.M, run), self._field(self.R, run),
                            self._field(self.Y, run),
                            self._field(self.dR if unit else self.G_mse, run), out,
                            g_ent=self._field(self.G_ent, run))

    def _leave(self, run, state):
        """Take ``run`` out of its group; the group's last run moves into its slot.

        ``state`` is the host copy of the state table, uploaded by the caller.
        """
        group = self.groups[run.mode]  # in slot order
        last = group[-1]
        group.remove(run)
        free = run.slot
        if last is not run:
            free, dst = last.slot, run.slot
            for stack in self.moving:
                stack[dst].copy_to_device(stack[free])
            self.table_h[dst] = self.table_h[free]
            state[dst] = state[free]
            last.slot = dst
            group.sort(key=lambda other: other.slot)
        state[free, self.k.S_DEAD] = self.k.FREE


class _Call:
    """One model call of an epoch: its runs' slots and lengths, reference outputs and buffers."""

    def __init__(self, driver, group):
        cuda = driver.cuda
        self.batch = len(group) > 1
        T = max(run.T for run in group)
        lengths = [run.T for run in group]
        self.lengths = lengths if min(lengths) < T else None
        slots = [run.slot for run in group]
        self.slots = cuda.to_device(np.array(slots, dtype=np.int64))
        self.lengths_dev = cuda.to_device(np.array(lengths, dtype=np.int64))
        # Y itself where the runs' slots are a contiguous run of full length; else a copy
        full = min(lengths) == driver.T
        self.view = (slots[0], slots[0] + len(slots)) if full and \
            slots == list(range(slots[0], slots[0] + len(slots))) else None
        K = driver.Y.shape[1]
        self.buffer = None if self.view else cuda.device_array((len(group), K, T))
        try:
            ref = np.stack([run.ref for run in group])
        except ValueError:
            raise SpecblurError("runs called together must have model outputs of one shape, "
                                f"got {[run.ref.shape for run in group]}") from None
        self.ref = cuda.to_device(ref)
        self.g_out = cuda.device_array(ref.shape)

    def input(self, driver):
        """The model's input this epoch: ``(G, K, T)`` for a batch, ``(K, T)`` for one run."""
        if self.view:
            Y = driver.Y[self.view[0]:self.view[1]]
        else:
            driver.k.gather(driver.Y, self.slots, self.lengths_dev, self.buffer)
            Y = self.buffer
        return Y if self.batch else Y[0]


class _HostModel:
    """A model without ``supports_device``, called on host copies of the device arrays."""

    def __init__(self, model, cuda):
        self.model, self.cuda = model, cuda
        self._copies = {}  # id of a forward's device input -> (the input, its host copy)

    def forward(self, Y, lengths=None):
        """The wrapped model's forward on a host copy of ``Y``, as a device array."""
        host = Y.copy_to_host()  # a fresh copy: the driver refills its buffers every epoch
        self._copies[id(Y)] = (Y, host)
        out = self.model.forward(host) if lengths is None else \
            self.model.forward(host, lengths=lengths)
        return self.cuda.to_device(np.ascontiguousarray(out, dtype=np.float64))

    def vjp(self, Y, g_out, lengths=None):
        """The wrapped model's VJP on host copies (``Y``'s from its forward), as a device array."""
        kept = self._copies.pop(id(Y), None)
        host = kept[1] if kept is not None and kept[0] is Y else Y.copy_to_host()
        g = g_out.copy_to_host()
        grad = self.model.vjp(host, g) if lengths is None else \
            self.model.vjp(host, g, lengths=lengths)
        return self.cuda.to_device(np.ascontiguousarray(grad, dtype=np.float64))


def _table_row(k, run):
    """Run ``run``'s row of the settings table (``gpu_objective.TABLE``)."""
    cfg = run.cfg
    return k.table_row(
        code=run.code, eps=cfg.eps, ent_scale=run.c_ent * run.h_scale, r_max=run.r_max,
        optimizer=k.ADAM if run.adam else k.SGD, lr=cfg.lr, beta1=cfg.beta1, beta2=cfg.beta2,
        adam_eps=cfg.adam_eps, c_mse=run.c_mse, c_ent=run.c_ent, h_scale=run.h_scale,
        norm=run.norm, tv=run.tv, tv_delta=cfg.tv_delta, epochs=cfg.epochs,
        log_every=cfg.log_every, snapshot_every=cfg.snapshot_every, T=run.T,
        x_total=run.x_total)
