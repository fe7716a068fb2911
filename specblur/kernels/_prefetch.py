"""Software prefetch for the CPU kernels (LLVM's ``llvm.prefetch``: x86 ``prefetcht0``
and ``prefetchw``).

A kernel walks a tile of frames row by row. Once the fields outgrow the cache, each row's
run of a tile's frames lies on a page of its own, where the hardware prefetchers do not
look ahead, so every row starts with a wait on memory. :func:`fetch_row` asks for a row
``AHEAD`` rows before the kernel reads or writes it. The forward kernel, which does little
arithmetic per bin, uses it; with it a ``fit`` epoch costs little more per bin at
257 × 8000 than at 257 × 500 (``benchmarks/bench_scaling.py``, figures in
``docs/performance.md``). The backward kernel, with more arithmetic to hide the wait, did
not gain from it. A prefetch never faults and never changes a result.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._numba import jit

#: Rows between the one a kernel prefetches and the one it works on.
AHEAD = 4
#: Bytes per cache line: one prefetch per line.
LINE_BYTES = 64

_I8P = ir.IntType(8).as_pointer()
_I32 = ir.IntType(32)


def _intrinsic(write):
    @intrinsic
    def prefetch(typingctx, array, index):
        if not (isinstance(array, types.Array) and isinstance(index, types.Integer)):
            return None  # a typing error for anything but (array, integer index)
        sig = types.void(array, index)

        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [_I8P, _I32, _I32, _I32]),
                "llvm.prefetch.p0")
            address = builder.bitcast(builder.gep(data, [args[1]]), _I8P)
            # read (0) or write (1); locality 3, keep in all cache levels; data cache (1)
            builder.call(fn, [address, _I32(1 if write else 0), _I32(3), _I32(1)])
            return context.get_dummy_value()

        return sig, codegen

    return prefetch


#: ``prefetch(array, i)`` in jitted code: fetch the cache line of the C-ordered
#: ``array``'s flat element ``i`` for reading.
prefetch = _intrinsic(False)
#: ``prefetch_write(array, i)``: the same, for writing.
prefetch_write = _intrinsic(True)


@jit(inline="always")
def flat_index(A, b, row, t):
    """The flat index of ``A[b, row, t]`` in a C-ordered ``(B, K, T)`` array."""
    return (b * A.shape[1] + row) * A.shape[2] + t


@jit(inline="always")
def fetch_row(A, b, row, t0, width, write):
    """Prefetch ``A[b, row, t0:t0 + width]`` of a C-ordered ``(B, K, T)`` array, for
    writing if ``write``; nothing if ``row`` is past the last row."""
    if row < A.shape[1]:
        start = flat_index(A, b, row, t0)
        step = LINE_BYTES // A.itemsize
        for j in range(0, width + step - 1, step):  # the last line too, if not aligned
            at = start + min(j, width - 1)
            if write:
                prefetch_write(A, at)
            else:
                prefetch(A, at)
