r"""Software prefetch: ask for data a loop will read soon, while it still works on other data.

A prefetch is a hint with no effect on any value: it asks the CPU for a cache line and goes
on. A thread that reads memory it has not asked for waits on it, and a core keeps only a
few cache misses in flight, so one thread streaming an array reads it well below the
memory's speed, and computes nothing meanwhile. Two uses in this kernel set:

* ``prefetch_line``, a line at a time, a few rows ahead of a pass over a channels-last
  block whose rows lie a whole pixel's channels apart (``.stage_channels_last``): a stride
  the hardware prefetchers do not follow across pages;
* ``prefetch_part``, the *next* plane of a channel loop (``.stage``, which works a channel
  at a time on NCHW planes): the row loops over the current plane (copying it into padded
  or phase scratch, scattering a gradient row by row) each ask for a share of the next
  plane, one part per row, so its lines arrive while the current one is worked on and the
  next pass finds them in cache. Spread out, not in a burst: asked for all at once, the
  lines queue for the same few miss slots and the thread waits about as long as a read.

A plane about to be *written* is fetched for writing (``write=True``, ``prefetchw``): its
lines arrive owned, so the stores into it need not wait to read them first.
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .cache import CACHE
from .llvm import array_data, as_i64

LINE_BYTES = 64
"""Bytes in a cache line (x86-64)."""


def _make_prefetch(write):
    """The intrinsic ``(array, index)``: ask for the cache line of the C-contiguous array's
    flat element ``index``, for reading or (``write``) for writing, into every cache level."""

    @intrinsic
    def prefetch(typingctx, arr, index):
        if not isinstance(arr, types.Array) or not isinstance(index, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            data = array_data(context, builder, signature.args[0], args[0])
            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                "llvm.prefetch.p0")
            address = builder.bitcast(builder.gep(data, as_i64(builder, [args[1]])), i8p)
            # llvm.prefetch(address, write?, locality 3 = keep in all levels, 1 = data)
            builder.call(fn, [address, ir.Constant(i32, int(write)), ir.Constant(i32, 3),
                              ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(arr, index), codegen

    return prefetch


prefetch_line = _make_prefetch(False)
"""``prefetch_line(arr, index)``: ask for the line of ``arr``'s flat element ``index``, to read."""
prefetch_line_for_write = _make_prefetch(True)
"""``prefetch_line_for_write(arr, index)``: the same, for a line about to be written."""


@njit(inline="always", cache=CACHE)
def prefetch_part(flat, k, parts, write):
    """Ask for part k of ``parts`` equal parts of ``flat``, a cache line at a time.

    Args:
        flat: A 1-D contiguous array (a plane, flat).
        k: The part, ``0 <= k < parts``.
        parts: The number of parts (the steps of the loop that calls this once a step).
        write: Fetch the lines for writing (the plane is about to be written).
    """
    size = flat.shape[0]
    step = LINE_BYTES // flat.itemsize
    for i in range(size * k // parts, size * (k + 1) // parts, step):
        if write:
            prefetch_line_for_write(flat, i)
        else:
            prefetch_line(flat, i)


@njit(inline="always", cache=CACHE)
def prefetch_parts(planes, k, parts, write):
    """``prefetch_part`` of each plane of ``planes``: what a row loop that takes planes to
    prefetch calls once a row.

    Args:
        planes: A tuple of 1-D contiguous arrays, or None (nothing to ask for).
        k: The part, ``0 <= k < parts``.
        parts: The number of parts (the loop's rows).
        write: Fetch the lines for writing.
    """
    if planes is not None:
        for plane in planes:
            prefetch_part(plane, k, parts, write)
