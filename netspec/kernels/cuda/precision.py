"""Kernels of half-precision storage on the GPU (netspec.kernels.cpu.precision's twins): the
same scalar rules, compiled as device functions, so that both devices round every value alike."""

from __future__ import annotations

from netspec.kernels.cpu.precision import _bfloat16_rule, _half_rule
from netspec.kernels.cuda._launch import launch
from netspec.kernels.jit import cuda_device, cuda_kernel, cuda_module

cuda = cuda_module()
_half = cuda_device(_half_rule)
_bfloat16 = cuda_device(_bfloat16_rule)


@cuda_kernel
def _round_float16(bits):
    for i in range(cuda.grid(1), bits.size, cuda.gridsize(1)):
        bits[i] = _half(bits[i])


@cuda_kernel
def _round_bfloat16(bits):
    for i in range(cuda.grid(1), bits.size, cuda.gridsize(1)):
        bits[i] = _bfloat16(bits[i])


def round_float16(bits):
    # bits: (n,) uint32, the memory of float32 values, each rounded in place to float16's
    launch(_round_float16, bits.size, bits)


def round_bfloat16(bits):
    # bits: (n,) uint32, the memory of float32 values, each rounded in place to bfloat16's
    launch(_round_bfloat16, bits.size, bits)
