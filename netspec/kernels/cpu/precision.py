"""Kernels of half-precision storage: float32 values rounded, in place, to the nearest value of
float16 or bfloat16 (ties to even, overflow to infinity, NaN kept), as a store to a half
buffer and a load back would give them.

Each kernel takes the float32 values' memory viewed as uint32 (``x.reshape(-1).view(np.uint32)``)
and works on the bits alone (integer arithmetic, the same on every device: a float view of the
same memory beside it would be two arrays that alias, which a parallel loop may not assume).
The scalar rules (``_half_rule``, ``_bfloat16_rule``) are plain functions, compiled here for the
CPU and by ``netspec.kernels.cuda.precision`` for the GPU, so both devices round alike.
"""

from __future__ import annotations

from netspec.kernels.jit import njit, pjit, prange

_SIGN = 0x80000000
_ABS = 0x7FFFFFFF
_INF = 0x7F800000
_HALF_OVERFLOW = 0x47800000      # 65536.0: float16 values round to infinity from here
_HALF_MIN_NORMAL = 0x38800000    # 2**-14: below it float16 is subnormal, with a step of 2**-24


def _half_rule(b):
    # b: the uint32 bits of a float32 value; the bits of the nearest float16 value
    b = int(b)
    a = b & _ABS
    if a >= _INF:                      # infinity or NaN: unchanged
        return b
    if a >= _HALF_MIN_NORMAL:          # float16 normals: 23 -> 10 mantissa bits, ties to even
        r = (b + 0xFFF + ((b >> 13) & 1)) & 0xFFFFE000
        if (r & _ABS) >= _HALF_OVERFLOW:
            r = (b & _SIGN) | _INF
        return r
    # float16 subnormals: q * 2**-24 with q = |v| * 2**24 rounded (ties to even); |v| = m * 2**(e - 150)
    e = a >> 23
    m = (a & 0x7FFFFF) | (0x800000 if e > 0 else 0)
    s = 126 - (e if e > 0 else 1)      # |v| * 2**24 = m / 2**s, s >= 14
    q = 0
    if s < 32:
        q = m >> s
        rem = m & ((1 << s) - 1)
        half = 1 << (s - 1)
        if rem > half or (rem == half and (q & 1) == 1):
            q += 1
    if q == 0:
        return b & _SIGN               # (a signed zero)
    p = 0                              # q = 1.f * 2**p: the float32 of q * 2**-24
    while (q >> (p + 1)) != 0:
        p += 1
    return (b & _SIGN) | ((p + 103) << 23) | ((q << (23 - p)) & 0x7FFFFF)


def _bfloat16_rule(b):
    # b: the uint32 bits of a float32 value; the bits of the nearest bfloat16 value (7 mantissa bits)
    b = int(b)
    if (b & _ABS) > _INF:              # NaN: unchanged (rounding could make it infinity)
        return b
    return (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000


_half = njit(_half_rule)
_bfloat16 = njit(_bfloat16_rule)


@pjit
def round_float16(bits):
    # bits: (n,) uint32, the memory of float32 values, each rounded in place to float16's
    for i in prange(bits.size):
        bits[i] = _half(bits[i])


@pjit
def round_bfloat16(bits):
    # bits: (n,) uint32, the memory of float32 values, each rounded in place to bfloat16's
    for i in prange(bits.size):
        bits[i] = _bfloat16(bits[i])
