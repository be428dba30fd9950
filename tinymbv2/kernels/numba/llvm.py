"""Loops written in LLVM's own terms: vector registers, and the instructions on them.

The CPU's vector registers, and the instructions the register kernels of the numba set
emit on them.

Loops written in Numba leave LLVM to choose what stays in registers and how a sum is split
into vector lanes; for the innermost kernels that choice was measured to be the slow one
(``tile`` says why). Those kernels are Numba ``@intrinsic`` s instead, which emit their
loops directly: ``Emit`` holds the instructions they are made of (vectors of one
register's width, masked loads and stores that touch nothing past a block's edge,
``llvm.fma``, prefetches, non-temporal stores), for ``tile``'s register blocks of a
matrix product, ``transpose``'s transposes and ``depthwise.rows3x3``'s
channels-last depthwise filter.

``VECTOR_BYTES`` is read from the CPU Numba compiles for: 64 bytes with AVX-512, else 32;
``lanes(x)`` is how many values of x's dtype one holds. That CPU is Numba's target, not
necessarily the host: ``NUMBA_CPU_NAME`` and ``NUMBA_CPU_FEATURES`` set it (to build a cache
for older CPUs, say), and ``NUMBA_CPU_NAME=generic`` asks for a baseline x86-64 without
AVX-512 or even AVX. The kernels read it where Numba does (``target_features``), so
they never emit AVX-512 vectors into code compiled for a CPU without them. On a CPU
with less than AVX2, LLVM splits the 32-byte vectors and calls ``fma`` from the C
library: slower, the same results.
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit
from numba.core import cgutils
from numba.core.registry import cpu_target

from .cache import CACHE


def target_features() -> list[str]:
    """The CPU features Numba compiles for (``+avx512f``, ``-avx512f``, ...): the features of
    ``NUMBA_CPU_FEATURES`` if set, none with ``NUMBA_CPU_NAME=generic``, else the host's.

    Read from Numba's own code generator: the same features its compiled code, and the
    key of its disk cache, are made for."""
    _triple, _cpu_name, features = cpu_target.target_context.codegen().magic_tuple()
    return features.split(",") if features else []


AVX512 = "+avx512f" in target_features()
"""Does the CPU Numba compiles for have AVX-512 (32 vector registers of 64 bytes)?"""
VECTOR_BYTES = 64 if AVX512 else 32
"""One vector register: 64 bytes with AVX-512, else 32 (AVX2's; LLVM splits it further on
a CPU with less)."""

_JIT = dict(cache=CACHE, boundscheck=False)


@njit(inline="always", **_JIT)
def lanes(x):
    """The number of values of ``x``'s dtype one vector register holds."""
    return VECTOR_BYTES // x.itemsize


I32, I64 = ir.IntType(32), ir.IntType(64)
"""LLVM's 32- and 64-bit integer types: the intrinsics' flags, and element offsets."""


class Emit:
    """The LLVM instructions the register kernels are made of, for one dtype, on one builder.

    Vectors of ``lanes`` values, masked loads and stores, fused multiply-adds, prefetches.

    Args:
        context: Numba's code-generation context.
        builder: The ``llvmlite`` IR builder the instructions go to.
        dtype: The Numba float type of the values.
    """

    def __init__(self, context, builder, dtype):
        self.builder, self.dtype = builder, dtype
        self.scalar = context.get_value_type(dtype)
        self.lanes = VECTOR_BYTES // (dtype.bitwidth // 8)
        self.vec = ir.VectorType(self.scalar, self.lanes)
        masks = ir.VectorType(ir.IntType(1), self.lanes)
        pointer, suffix, module = self.vec.as_pointer(), f"v{self.lanes}f{dtype.bitwidth}", builder.module
        self._fma = cgutils.get_or_insert_function(
            module, ir.FunctionType(self.vec, [self.vec] * 3), f"llvm.fma.{suffix}")
        self._load = cgutils.get_or_insert_function(
            module, ir.FunctionType(self.vec, [pointer, I32, masks, self.vec]),
            f"llvm.masked.load.{suffix}.p0")
        self._store = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [self.vec, pointer, I32, masks]),
            f"llvm.masked.store.{suffix}.p0")
        self._prefetch = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), I32, I32, I32]),
            "llvm.prefetch.p0")
        self.align = ir.Constant(I32, dtype.bitwidth // 8)
        self.zero = ir.Constant(self.vec, [ir.Constant(self.scalar, 0.0)] * self.lanes)

    def const(self, value):
        """The Python int ``value`` as an LLVM i64 constant."""
        return ir.Constant(I64, value)

    def at(self, *terms):
        """The sum of i64 values and Python ints: an element offset.

        Args:
            *terms: i64 values and Python ints.

        Returns:
            The i64 sum.
        """
        total = self.const(0)
        for t in terms:
            total = self.builder.add(total, self.const(t) if isinstance(t, int) else t)
        return total

    def times(self, x, y):
        """The i64 product ``x * y``: an element offset.

        Args:
            x: A Python int or an i64 value.
            y: An i64 value.

        Returns:
            The i64 product.
        """
        return self.builder.mul(self.const(x) if isinstance(x, int) else x, y)

    def splat(self, value, vector_type=None):
        """A vector with ``value`` in every lane.

        Args:
            value: The scalar.
            vector_type: The vector's type; None: the value vector (``lanes`` of the dtype).

        Returns:
            The vector.
        """
        b, vt = self.builder, vector_type or self.vec
        one = b.insert_element(ir.Constant(vt, ir.Undefined), value, ir.Constant(I32, 0))
        return b.shuffle_vector(one, ir.Constant(vt, ir.Undefined),
                                ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes))

    def mask(self, valid):
        """The lanes l < ``valid`` (an i64; all lanes from ``lanes`` on, none from 0 down)."""
        index = ir.VectorType(I64, self.lanes)
        return self.builder.icmp_signed("<", ir.Constant(index, list(range(self.lanes))),
                                        self.splat(valid, index))

    def pointer(self, data, offset):
        """A pointer to the vector that starts at ``data[offset]``.

        Args:
            data: The pointer to the array's first value.
            offset: The element offset, an i64.

        Returns:
            The vector pointer.
        """
        return self.builder.bitcast(self.builder.gep(data, [offset]), self.vec.as_pointer())

    def load(self, data, offset, mask):
        """A masked vector load from ``data[offset]``: the lanes outside ``mask`` read nothing (0).

        Args:
            data: The pointer to the array's first value.
            offset: The element offset, an i64.
            mask: The lanes to load ([mask][tinymbv2.kernels.numba.llvm.Emit.mask]).

        Returns:
            The vector.
        """
        return self.builder.call(self._load, [self.pointer(data, offset), self.align, mask, self.zero])

    def store(self, value, data, offset, mask):
        """A masked vector store to ``data[offset]``: the lanes outside ``mask`` write nothing.

        Args:
            value: The vector.
            data: The pointer to the array's first value.
            offset: The element offset, an i64.
            mask: The lanes to store.
        """
        self.builder.call(self._store, [value, self.pointer(data, offset), self.align, mask])

    def store_streaming(self, value, data, offset):
        """A whole vector to an address aligned to its size, marked non-temporal.

        It is written to memory without first reading its cache line in (``vmovntps``).

        Args:
            value: The vector.
            data: The pointer to the array's first value.
            offset: The element offset, an i64, of a vector-aligned address.
        """
        store = self.builder.store(value, self.pointer(data, offset), align=VECTOR_BYTES)
        store.set_metadata("nontemporal", self.builder.module.add_metadata([ir.Constant(I32, 1)]))

    def fma(self, x, y, z):
        """The fused multiply-add ``x * y + z``, lane by lane, rounded once.

        Args:
            x: A vector.
            y: A vector.
            z: A vector.

        Returns:
            The vector.
        """
        return self.builder.call(self._fma, [x, y, z])

    def clamp6(self, z, on):
        """z clamped to [0, 6] (ReLU6) where the i1 ``on`` is set, else z.

        ``z < 0 ? 0 : z``, then ``> 6 ? 6 : ...``: for every number the value of Numba's
        ``min(max(z, 0), 6)``.

        Args:
            z: A vector.
            on: An i1: clamp or not.

        Returns:
            The vector.
        """
        b = self.builder
        six = self.splat(ir.Constant(self.scalar, 6.0))
        low = b.select(b.fcmp_ordered("<", z, self.zero), self.zero, z)
        return b.select(on, b.select(b.fcmp_ordered(">", low, six), six, low), z)

    def no_unroll(self):
        """Loop metadata that keeps LLVM from unrolling the loop it is set on (a distinct loop ID
        holding ``llvm.loop.unroll.disable``): for the latch's branch, ``llvm.loop``.

        Returns:
            The loop ID node.
        """
        module = self.builder.module
        self._loops = getattr(self, "_loops", 0) + 1
        disable = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
        # a loop ID is its own first operand; the name only keeps each loop's node distinct
        loop = module.add_metadata([disable, ir.MetaDataString(module, f"tinymbv2.loop.{id(self)}.{self._loops}")])
        loop.operands = (loop, disable)
        return loop

    def prefetch(self, data, offset):
        """Ask for the cache line of ``data[offset]`` (read, keep in all levels).

        Args:
            data: The pointer to the array's first value.
            offset: The element offset, an i64.
        """
        p = self.builder.bitcast(self.builder.gep(data, [offset]), ir.IntType(8).as_pointer())
        self.builder.call(self._prefetch, [p, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])


def array_data(context, builder, array_type, value):
    """The pointer to the first value of the Numba array ``value`` of type ``array_type``.

    Args:
        context: Numba's code-generation context.
        builder: The IR builder.
        array_type: The Numba array type.
        value: The array, an LLVM value.

    Returns:
        The data pointer.
    """
    return context.make_array(array_type)(context, builder, value).data


def as_i64(builder, values):
    """Integer arguments widened to 64 bits (sign-extended), for offset arithmetic.

    Args:
        builder: The IR builder.
        values: LLVM integer values.

    Returns:
        The values as i64.
    """
    return [builder.sext(v, I64) if v.type.width < 64 else v for v in values]
