"""Engine ``int8``: byte-sliced int8 GEMMs with int32 accumulation (``torch._int_mm``, oneDNN;
AMX/VNNI on x86), exact modulo 2^64.

Where it wins, it wins big: about 3x faster than ``int64`` at 1000x1000x1000 on a Xeon with AMX
(2 cores, torch 2.13: ~38 ms against ~118 ms). It does not win everywhere: on an AMD EPYC with
AVX-512 VNNI and no AMX (2 cores) it takes 100-118 ms against torch int64's 67-87 ms, and its
multi-threaded GEMMs stall when other processes share the cores. ``method="auto"`` uses it only
where this machine's calibration measured it faster (``covault/ringmm/calibrate.py``).

Why it is exact
---------------
Signed digits. Let ``C = 0x8080_8080_8080_8080``. For a ring element ``x`` let
``u = (x + C) mod 2^64`` with bytes ``u_i`` in ``[0, 255]`` and put ``d_i = u_i - 128`` in
``[-128, 127]``. Then ``sum_i d_i 2^(8i) = u - C = x (mod 2^64)``. The int8 view of the bytes of
``u XOR C`` is exactly ``d`` (``u_i XOR 0x80`` read as a signed byte is ``u_i - 128``).

Products. With ``x = sum d_i 2^(8i)`` and ``y = sum e_j 2^(8j)``, every term with ``i + j >= 8``
vanishes modulo 2^64, so for matrices ``A = sum D_i 2^(8i)`` and ``B = sum E_j 2^(8j)``::

    A @ B = sum_{s=0..7} 2^(8s) P_s  (mod 2^64),   P_s = sum_{i=0..s} D_i @ E_{s-i}
                                                       = [D_s | ... | D_0] @ [E_0; ...; E_s].

Each ``P_s`` is ONE int8 GEMM with inner size ``(s+1) K``: 8 GEMMs and 36 digit-pair products in
all. ``A``'s digit planes are stored row-wise in reverse order ``[D_7 | ... | D_0]`` (a suffix of
each row is ``[D_s | ... | D_0]``) and ``B``'s in order ``[E_0; ...; E_7]`` (a prefix of rows),
so every GEMM reads strided views of two buffers built once.

Exactness bound. ``|d_i e_j| <= 2^14`` (equality only for ``-128 * -128``), so every partial sum
of ``P_s``, in any accumulation order, is bounded by ``(s+1) K 2^14 <= 8 K 2^14``. The inner
size is split into chunks of ``K <= 8192``, so ``|P_s| <= 2^30 < 2^31``: the int32 accumulator
never overflows and ``P_s`` is exact. (A backend that evaluates ``s8 x s8`` as
``(d + 128) x e`` minus a compensation term stays below ``8 * 8192 * 255 * 128 < 2^31 - 1`` as
well.) In the recombination ``sum 2^(8s) P_s`` (Horner, from ``s = 7``) levels 7..4 are combined
in wrapping int32 (they are multiplied by 2^32 in the end, so only their value modulo 2^32
matters); levels 3..0 and the sum over chunks are wrapping int64 operations. Before first use
in a process the engine is checked against torch int64 on extreme digits (all 127, all -128,
mixed) at the full chunk size and on mixed values; a backend that saturates or rounds fails that
check and the engine is not used.

Measured on the 2-core development machine (Xeon with AMX, torch 2.13), 1000x1000x1000 with
uniform ring elements: plaintext float64 BLAS 13-23 ms; this int8 engine 37-40 ms (22 ms of it
the 8 GEMMs); torch int64 112-118 ms; an exact float64-limb split (three signed limbs of
22/22/20 bits, limb products concatenated along K: 6 dgemm-equivalents) 153 ms. float32 would
need 7-bit limbs (more than 50 limb products) and was not pursued.

Threads. The GEMMs use torch's intra-op threads; everything else here is single-threaded numpy,
because many short OpenMP regions stall badly when party processes or threads share the cores.
Where P parties share C cores, give each ``torch.set_num_threads(max(1, C // P))``: two
processes on 2 cores with 1 thread each take ~60 ms per 1000^3 product (torch int64, which is
single-threaded: ~112 ms), with 2 threads each 120-330 ms.
"""

from __future__ import annotations

import functools

import numpy as np

from covault.ringmm import int64

NAME = "int8"
BLOCKS = int64.BLOCKS  # candidate (row, column) block sizes of the GEMMs, as for int64
K_CHUNK = 8192  # largest inner size of one int8 pass; see the exactness bound above
_OFFSET = -0x7F7F_7F7F_7F7F_7F80  # 0x8080_8080_8080_8080 as int64
_TILE_ELEMS = 1 << 20  # elements per row tile / slab (bounds scratch memory)


@functools.cache
def available() -> bool:
    """Whether the engine runs here and passes its exactness self-check (once per process)."""
    if not int64.available():
        return False
    import torch

    if not hasattr(torch, "_int_mm") or torch.backends.cpu.get_cpu_capability() != "AVX512":
        return False
    try:
        return _self_check()
    except (RuntimeError, TypeError, ValueError, NotImplementedError):
        return False


def terms(m: int, k: int, n: int, blocks: tuple[int, int]) -> tuple[float, ...]:
    """Cost-model terms of one ``(m, k) @ (k, n)`` product: fixed, multiply-adds over padded
    blocks (the GEMMs), operand elements (recoding), outputs (recombination)."""
    gemm = int64.padded(m, blocks[0]) * k * int64.padded(n, blocks[1])
    return (1.0, float(gemm), float(m * k + k * n), float(m * n))


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` modulo 2^64 for non-empty int64 operands of two or more dimensions (one
    product per batch element, inner sizes beyond ``K_CHUNK`` in equal chunks)."""
    if a.ndim == 2 and b.ndim == 2:
        return _chunked(a, b)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    ab = np.broadcast_to(a, (*batch, *a.shape[-2:]))
    bb = np.broadcast_to(b, (*batch, *b.shape[-2:]))
    out = np.empty((*batch, a.shape[-2], b.shape[-1]), np.int64)
    for idx in np.ndindex(*batch):
        out[idx] = _chunked(ab[idx], bb[idx])
    return out


def _chunked(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    k = a.shape[1]
    if k <= K_CHUNK:
        return _int8(a, b)
    size = -(-k // -(-k // K_CHUNK))  # equal chunks of at most K_CHUNK
    out = np.zeros((a.shape[0], b.shape[1]), np.int64)
    for k0 in range(0, k, size):
        out += _int8(a[:, k0 : k0 + size], b[k0 : k0 + size])
    return out


def _recode(src: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``(src + C) XOR C`` into ``out``: its bytes, read as int8, are the signed digits."""
    np.add(src, _OFFSET, out=out)
    return np.bitwise_xor(out, _OFFSET, out=out)


def _int8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` mod 2^64 for ``a`` (M, K), ``b`` (K, N) with ``K <= K_CHUNK`` (module doc).

    Only the 8 GEMMs run in torch; recoding, digit transposes and recombination are numpy
    (single-threaded): many short OpenMP regions stall badly when several party processes or
    threads share the cores, while long GEMM regions do not.
    """
    import torch

    m, k = a.shape
    n = b.shape[1]
    # Right operand: digit planes [E_0; ...; E_7] as one (8K, N) int8 matrix, recoded in slabs.
    planes_b = np.empty((8, k, n), np.int8)
    slab = max(1, min(k, _TILE_ELEMS // n))
    scratch = np.empty((slab, n), np.int64)
    for k0 in range(0, k, slab):
        r = _recode(b[k0 : k0 + slab], scratch[: min(slab, k - k0)])
        np.copyto(planes_b[:, k0 : k0 + len(r)], r.view(np.int8).reshape(-1, n, 8).transpose(2, 0, 1))
    eb = torch.from_numpy(planes_b).view(8 * k, n)
    # Left operand, one row tile at a time: digit planes [D_7 | ... | D_0] along each row.
    tile = max(1, min(m, _TILE_ELEMS // max(k, n)))
    scratch = np.empty((tile, k), np.int64)
    planes_a = np.empty((tile, 8, k), np.int8)
    acc = np.empty((tile, n), np.int32)
    high = np.empty((tile, n), np.int32)
    out = np.empty((m, n), np.int64)
    for m0 in range(0, m, tile):
        rows = min(tile, m - m0)
        r = _recode(a[m0 : m0 + rows], scratch[:rows])
        np.copyto(planes_a[:rows], r.view(np.int8).reshape(rows, k, 8)[:, :, ::-1].transpose(0, 2, 1))
        da = torch.from_numpy(planes_a[:rows]).view(rows, 8 * k)
        p, h, o = acc[:rows], high[:rows], out[m0 : m0 + rows]
        tp = torch.from_numpy(p)
        # Horner from the top digit level: sum_s 2^(8s) P_s. Levels 7..4 only matter modulo
        # 2^32 (they end up multiplied by 2^32), so they are combined in wrapping int32.
        # Shifts act on unsigned views (well defined for negative values).
        for s in range(7, -1, -1):
            torch._int_mm(da[:, (7 - s) * k :], eb[: (s + 1) * k], out=tp)
            if s == 7:
                np.copyto(h, p)
            elif s > 3:
                np.left_shift(h.view(np.uint32), 8, out=h.view(np.uint32))
                h += p
            else:
                if s == 3:
                    np.copyto(o, h)
                np.left_shift(o.view(np.uint64), 8, out=o.view(np.uint64))
                o += p
    return out


def _self_check() -> bool:
    """Compare the engine with torch int64 on extreme digits and on mixed values."""
    idx = np.arange(40 * K_CHUNK, dtype=np.int64)
    mixed = (idx * np.int64(-7046029254386353131)) ^ (idx << 29)  # fixed test pattern, not secret
    extremes = np.array([0x7F7F_7F7F_7F7F_7F7F, 0x7F7F_7F7F_7F7F_7F80, -1, -(1 << 63)], np.int64)
    pick = (mixed >> 40) & 3
    cases = [
        (np.full((5, K_CHUNK), extremes[1]), np.full((K_CHUNK, 3), extremes[1])),  # all -128 digits
        (np.full((5, K_CHUNK), extremes[0]), np.full((K_CHUNK, 3), extremes[1])),  # 127 x -128
        (
            extremes[pick[: 17 * K_CHUNK]].reshape(17, K_CHUNK),
            extremes[pick[: 9 * K_CHUNK]].reshape(K_CHUNK, 9),
        ),
        (mixed[: 96 * 300].reshape(96, 300), mixed[-300 * 80 :].reshape(300, 80)),
    ]
    return all(np.array_equal(_int8(x, y), int64.matmul(x, y)) for x, y in cases)
