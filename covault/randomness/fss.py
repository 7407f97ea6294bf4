"""Distributed comparison functions (DCF): function secret sharing of ``x < alpha``.

A DCF key pair (Boyle, Chandran, Gilboa, Gupta, Ishai, Kumar, Rathee, "Function Secret Sharing
for Mixed-Mode and Fixed-Point Secure Computation", EUROCRYPT 2021, Sec. 3, Fig. 1; function
secret sharing: Boyle-Gilboa-Ishai, CCS 2016) shares ``f(x) = beta if x < alpha else 0`` for
``x in [0, 2^bits)`` and a payload ``beta in (Z_2^64)^m``: ``eval(0, k0, x) + eval(1, k1, x) =
f(x)`` (mod 2^64, word by word), while each key alone is pseudo-random.

**PRG.** Fixed-key AES-128 in Matyas-Meyer-Oseas mode, ``G_c(s) = AES_K(s ^ c) ^ s ^ c`` with a
public key ``K`` and public block constants ``c`` (Guo, Katz, Wang, Yu, "Efficient and Secure
Multiparty Computation from Fixed-Key Block Ciphers", IEEE S&P 2020). A node's expansion on
side ``L`` or ``R`` is ``1 + ceil(m/2)`` blocks: the child seed (bit 0 cleared) with the control
bit ``t`` in bit 0, then the value words. One ECB call encrypts every element's blocks of a
level: Python loops over the ``bits`` levels only. Evaluation expands only the side chosen
by the input bit; key generation expands both sides of both parties. For a few elements
(:data:`FEW_KEYS`) or points (:data:`FEW_POINTS`) the same steps run on Python integers
(128-bit seeds, one integer of all blocks per level), where numpy's cost per call would
dominate: the keys and shares are bit-identical to the arrays'.

**Key.** Each party's root seed (128 bits) plus correction words shared by both keys, per
level: a seed (16 bytes), ``m`` value words (8 m bytes) and two control bits; and ``m`` output
words. Per element: ``bits (16 + 8 m) + 8 m`` bytes and ``2 bits`` bits (:func:`key_bytes`).
The roots come from seeds the dealer shares with each party, so only the correction words
travel.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from covault.errors import ProtocolError

FIXED_KEY = bytes.fromhex("7ba1f657ef983f814453e4a23cba76c0")  # public, as MMO requires
_TAG = np.uint64(0x636F_7661_756C_7446)  # high word of every block constant
_ONE = np.uint64(1)
_NOT_ONE = ~np.uint64(1)
LEAF = 2  # the side index of the leaf conversion's constants
FEW_KEYS = 4  # up to this many elements, key generation runs on Python integers
FEW_POINTS = 8  # up to this many points, evaluation runs on Python integers
_M64 = (1 << 64) - 1
_M128 = (1 << 128) - 1
_SEED = _M128 ^ 1  # a seed block without the control bit
_TAG_INT = int(_TAG)
_local = threading.local()


def _ecb():
    """This thread's fixed-key AES-ECB encryptor, made once: ECB keeps no state between whole
    blocks, and every call here passes whole blocks."""
    enc = getattr(_local, "enc", None)
    if enc is None:
        # ECB as a fixed-key permutation of independent blocks (MMO), not as a cipher mode
        enc = _local.enc = Cipher(algorithms.AES(FIXED_KEY), modes.ECB()).encryptor()  # noqa: S305
    return enc


def blocks_per_side(m: int) -> int:
    """AES blocks of one node expansion: the seed block and ``ceil(m/2)`` value blocks."""
    return 1 + (m + 1) // 2


def key_bytes(bits: int, m: int) -> float:
    """Bytes per element of the correction words (the same for both keys): seeds, value words,
    control bits (packed) and output words."""
    return bits * (16 + 8 * m) + 8 * m + bits / 4


def _constants(blocks: int) -> np.ndarray:
    """Block constants ``(3, blocks, 2)`` uint64: sides L, R and the leaf, ``blocks`` each."""
    side = np.arange(3, dtype=np.uint64)[:, None]
    j = np.arange(blocks, dtype=np.uint64)[None, :]
    out = np.empty((3, blocks, 2), dtype=np.uint64)
    out[..., 0] = (side << np.uint64(32)) | j
    out[..., 1] = _TAG
    return out


class _MMO:
    """``AES_K(b) ^ b`` on every 128-bit block (uint64 pair) of :attr:`inp` in one ECB call, into
    :attr:`out`; both buffers are reused across the levels."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self._enc = _ecb()
        self.inp = np.empty(shape, dtype=np.uint64)
        self._raw = np.empty(self.inp.nbytes + 16, dtype=np.uint8)  # update_into wants slack
        self.out = self._raw[: self.inp.nbytes].view(np.uint64).reshape(shape)

    def __call__(self) -> np.ndarray:
        if self.inp.size:
            self._enc.update_into(self.inp.reshape(-1).view(np.uint8), self._raw)
        self.out ^= self.inp
        return self.out


def _children(out: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A node expansion ``(..., blocks, 2)`` -> seeds ``(..., 2)`` (bit 0 cleared), control bits
    ``(...)`` uint64 (bit 0 of the seed block) and value words ``(..., m)`` int64."""
    seeds = out[..., 0, :] & np.array([_NOT_ONE, ~np.uint64(0)], dtype=np.uint64)
    t = out[..., 0, 0] & _ONE
    vals = out[..., 1:, :].reshape(*out.shape[:-2], 2 * (out.shape[-2] - 1))[..., :m].view(np.int64)
    return seeds, t, vals


def _leaf(seed: np.ndarray, m: int, consts: np.ndarray) -> np.ndarray:
    """The leaf conversion of seeds ``(..., 2)`` to ``m`` ring words."""
    vb = consts[LEAF, 1:]
    mmo = _MMO((*seed.shape[:-1], *vb.shape))
    np.bitwise_xor(seed[..., None, :], vb, out=mmo.inp)
    return mmo().reshape(*seed.shape[:-1], 2 * vb.shape[0])[..., :m].view(np.int64)


@dataclass
class DcfKey:
    """One party's DCF key for ``N`` elements: ``root`` ``(N, 2)`` uint64 seeds and the correction
    words common to both keys: ``cw_seed`` ``(bits, N, 2)`` uint64, ``cw_v`` ``(bits, N, m)``
    int64, ``cw_t`` ``(bits, N, 2)`` uint8 (L, R) and ``cw_out`` ``(N, m)`` int64."""

    root: np.ndarray
    cw_seed: np.ndarray
    cw_v: np.ndarray
    cw_t: np.ndarray
    cw_out: np.ndarray

    @property
    def bits(self) -> int:
        return self.cw_seed.shape[0]

    def corrections(self) -> list[np.ndarray]:
        """The correction words as a message (control bits packed, 2 bits per level)."""
        return [self.cw_seed, self.cw_v, np.packbits(self.cw_t.reshape(-1)), self.cw_out]

    @classmethod
    def from_corrections(
        cls,
        root: np.ndarray,
        message: list[np.ndarray],
        bits: int,
        *,
        party: str,
        sender: str,
        op: str = "dcf",
    ) -> DcfKey:
        """A key from this party's root and the correction words received from ``sender``
        (:meth:`corrections`: uint64 seeds, int64 values, uint8 packed control bits, int64
        outputs); ProtocolError naming ``op``, ``party`` and ``sender`` unless their count,
        dtypes and shapes fit ``bits`` bits and the root's elements."""
        where = f"{op} at party {party!r}: the DCF correction words from {sender!r}"
        if not isinstance(message, list | tuple) or len(message) < 4:
            got = len(message) if isinstance(message, list | tuple) else type(message).__name__
            raise ProtocolError(f"{where}: {got} arrays, expected at least 4 (seeds, values, bits, outputs)")
        cw_seed, cw_v, packed, cw_out = message[:4]
        kinds = {
            "seed": (cw_seed, np.uint64),
            "value": (cw_v, np.int64),
            "bits": (packed, np.uint8),
            "output": (cw_out, np.int64),
        }
        wrong = {
            k: getattr(a, "dtype", type(a).__name__)
            for k, (a, dt) in kinds.items()
            if not isinstance(a, np.ndarray) or a.dtype != dt
        }
        if wrong:
            raise ProtocolError(
                f"{where}: wrong dtypes {wrong} (expected seed uint64, value int64, bits uint8, output int64)"
            )
        n, m = root.shape[0], cw_out.shape[-1] if cw_out.ndim == 2 else -1
        want = {"seed": (bits, n, 2), "value": (bits, n, m), "output": (n, m)}
        got = {"seed": cw_seed.shape, "value": cw_v.shape, "output": cw_out.shape}
        if got != want or packed.shape != ((2 * bits * n + 7) // 8,):
            raise ProtocolError(
                f"{where}: shapes {got} and {packed.shape} packed control bytes do not fit {bits} bits, "
                f"{n} elements"
            )
        t = np.unpackbits(packed, count=2 * bits * n).reshape(bits, n, 2)
        return cls(root, cw_seed, cw_v, t, cw_out)


def keygen(
    alpha: np.ndarray, beta: np.ndarray, bits: int, root0: np.ndarray, root1: np.ndarray
) -> tuple[DcfKey, DcfKey]:
    """Keys of ``f(x) = beta if x < alpha else 0`` on ``bits``-bit inputs, for ``N`` elements
    at once: ``alpha`` ``(N,)`` in ``[0, 2^bits)``, ``beta`` ``(N, m)`` int64, roots ``(N, 2)``
    uint64 (any 128 bits; bit 0 is ignored). BCG+21 Fig. 1, vectorised over the elements: the
    side of ``alpha``'s bit is kept, the other lost; signs ``(-1)^t1`` are selections.

    Two implementations of the same steps, with bit-identical keys: up to :data:`FEW_KEYS`
    elements on Python integers (one AES call per level; numpy's per-call cost dominates
    there), from there on arrays."""
    alpha = np.asarray(alpha).astype(np.uint64)
    beta = np.asarray(beta, dtype=np.int64)
    if 0 < alpha.shape[0] <= FEW_KEYS:
        return _keygen_few(alpha, beta, bits, root0, root1)
    n, m = alpha.shape[0], beta.shape[1]
    blocks = blocks_per_side(m)
    consts = _constants(blocks)
    mmo = _MMO((2, 2, n, blocks, 2))  # (party, side, N, block, 2)
    s = np.stack([root0, root1]).astype(np.uint64)  # (2 parties, N, 2)
    s[..., 0] &= _NOT_ONE
    t = np.zeros((2, n), dtype=np.uint64)
    t[1] = 1
    v_alpha = np.zeros((n, m), dtype=np.int64)
    cw_seed = np.empty((bits, n, 2), dtype=np.uint64)
    cw_v = np.empty((bits, n, m), dtype=np.int64)
    cw_t = np.empty((bits, n, 2), dtype=np.uint8)
    sides = consts[None, :2, None]
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)[:, None]
    abits = (alpha[None] >> shifts) & _ONE  # keep side a, lose side 1 - a
    flips = abits ^ _ONE
    masks = np.negative(abits).view(np.int64)[..., None]  # all ones where a = 1
    for i in range(bits):
        a = abits[i]
        right = a.astype(bool)
        r2 = right[:, None]
        np.bitwise_xor(s[:, None, :, None, :], sides, out=mmo.inp)
        seeds, tb, vals = _children(mmo(), m)  # (party, side, N, ...)
        s_keep = np.where(r2, seeds[:, 1], seeds[:, 0])
        sx = seeds[0] ^ seeds[1]
        s_cw = np.where(r2, sx[0], sx[1])
        dv = vals[0] - vals[1]  # (side, N, m): v_0 - v_1
        d_keep = np.where(r2, dv[1], dv[0])
        d_lose = np.where(r2, dv[0], dv[1])
        beta_a = beta & masks[i]
        d = beta_a - d_lose - v_alpha  # V_CW = (-1)^t1 d, and (-1)^t1 V_CW = d
        v_cw = np.where(t[1].astype(bool)[:, None], -d, d)
        v_alpha = d_keep - d_lose + beta_a
        tx = tb[0] ^ tb[1]  # (side, N)
        t_l = tx[0] ^ flips[i]
        t_r = tx[1] ^ a
        t_keep = np.where(right, t_r, t_l)
        cw_seed[i], cw_v[i] = s_cw, v_cw
        cw_t[i, :, 0], cw_t[i, :, 1] = t_l, t_r
        s = s_keep ^ (s_cw[None] & np.negative(t)[..., None])
        t = np.where(right, tb[:, 1], tb[:, 0]) ^ (t & t_keep[None])
    conv = _leaf(s, m, consts)
    d = conv[1] - conv[0] - v_alpha
    cw_out = np.where(t[1].astype(bool)[:, None], -d, d)
    return tuple(DcfKey(s0, cw_seed, cw_v, cw_t, cw_out) for s0 in (root0, root1))  # type: ignore[return-value]


def _block_constants(sides: range | tuple[int, ...], first: int, blocks: int) -> int:
    """The block constants of :func:`_constants` for ``sides`` (their blocks ``first..blocks-1``
    one after the other) as one little-endian integer."""
    out, k = 0, 0
    for c in sides:
        for j in range(first, blocks):
            out |= ((c << 32) | j | (_TAG_INT << 64)) << (128 * k)
            k += 1
    return out


def _keygen_few(
    alpha: np.ndarray, beta: np.ndarray, bits: int, root0: np.ndarray, root1: np.ndarray
) -> tuple[DcfKey, DcfKey]:
    """:func:`keygen` on Python integers: seeds as 128-bit integers, words mod 2^64, every
    element's four expansions (party, side) in one integer per level, one ECB call per level."""
    n, m = beta.shape
    blocks = blocks_per_side(m)
    side = 128 * blocks  # bits of one expansion
    side2 = 2 * side
    elem = 4 * side  # bits of one element's expansions: party 0 (L, R), party 1 (L, R)
    nbytes = n * elem // 8
    spread = sum(1 << (128 * j) for j in range(2 * blocks))  # a seed into both sides' blocks
    consts = 0
    for e in range(n):
        consts |= _block_constants((0, 1, 0, 1), 0, blocks) << (e * elem)
    update = _ecb().update
    from_bytes = int.from_bytes
    M64, M128, SEED = _M64, _M128, _SEED
    al = alpha.tolist()
    be = beta.view(np.uint64).tolist()
    r = np.stack([root0, root1]).astype(np.uint64).tolist()
    s0 = [(r[0][e][0] | (r[0][e][1] << 64)) & SEED for e in range(n)]
    s1 = [(r[1][e][0] | (r[1][e][1] << 64)) & SEED for e in range(n)]
    t0s, t1s = [0] * n, [1] * n
    va = [[0] * m for _ in range(n)]
    zero = [0] * m
    offs = [128 + 64 * w for w in range(m)]
    cws, cwv, cwt = [], [], []  # correction words in (level, element, ...) order
    elems = range(n)
    for i in range(bits):
        shift = bits - 1 - i
        x = 0
        for e in elems:
            x |= (s0[e] | (s1[e] << side2)) << (e * elem)
        x = x * spread ^ consts
        y = from_bytes(update(x.to_bytes(nbytes, "little")), "little") ^ x
        for e in elems:
            a = (al[e] >> shift) & 1  # keep side a, lose side 1 - a
            ye = y >> (e * elem) if e else y
            if a:
                o0a, o0b = side, 0
            else:
                o0a, o0b = 0, side
            o1a, o1b = o0a + side2, o0b + side2
            k0, k1 = (ye >> o0a) & M128, (ye >> o1a) & M128
            l0, l1 = (ye >> o0b) & M128, (ye >> o1b) & M128
            cw = (l0 ^ l1) & SEED
            ba = be[e] if a else zero
            v_e = va[e]
            t0, t1 = t0s[e], t1s[e]
            w = 0
            for q in offs:
                keep = ((ye >> (o0a + q)) & M64) - ((ye >> (o1a + q)) & M64)
                lose = ((ye >> (o0b + q)) & M64) - ((ye >> (o1b + q)) & M64)
                d = ba[w] - lose - v_e[w]  # V_CW = (-1)^t1 d
                cwv.append(-d & M64 if t1 else d & M64)
                v_e[w] = (keep - lose + ba[w]) & M64
                w += 1
            t_keep = ((k0 ^ k1) & 1) ^ 1
            t_lose = (l0 ^ l1) & 1
            cws.append(cw)
            if a:
                cwt += (t_lose, t_keep)
            else:
                cwt += (t_keep, t_lose)
            s0[e] = (k0 & SEED) ^ cw if t0 else k0 & SEED
            s1[e] = (k1 & SEED) ^ cw if t1 else k1 & SEED
            t0s[e] = (k0 & 1) ^ (t0 & t_keep)
            t1s[e] = (k1 & 1) ^ (t1 & t_keep)
    leaf = 128 * (blocks - 1)  # bits of one leaf conversion: (element, party) after another
    x = 0
    for e in elems:
        x |= (s0[e] | s1[e] << leaf) << (2 * e * leaf)
    x *= sum(1 << (128 * j) for j in range(blocks - 1))  # each seed into its blocks
    one = _block_constants((LEAF,), 1, blocks)
    consts = 0
    for k in range(2 * n):
        consts |= one << (k * leaf)
    x ^= consts
    y = from_bytes(update(x.to_bytes(2 * n * leaf // 8, "little")), "little") ^ x
    cw_out = []
    for e in elems:
        c0, c1 = 2 * e * leaf, (2 * e + 1) * leaf
        for w in range(m):
            d = ((y >> (c1 + 64 * w)) & M64) - ((y >> (c0 + 64 * w)) & M64) - va[e][w]
            cw_out.append(-d & M64 if t1s[e] else d & M64)
    seeds = b"".join(c.to_bytes(16, "little") for c in cws)
    out = (
        np.frombuffer(seeds, dtype="<u8").astype(np.uint64).reshape(bits, n, 2),
        np.array(cwv, dtype=np.uint64).reshape(bits, n, m).view(np.int64),
        np.array(cwt, dtype=np.uint8).reshape(bits, n, 2),
        np.array(cw_out, dtype=np.uint64).reshape(n, m).view(np.int64),
    )
    return tuple(DcfKey(s, *out) for s in (root0, root1))  # type: ignore[return-value]


MANY_POINTS = 512  # from this many points, evaluation works on separate 64-bit word arrays


def evaluate(party: int, key: DcfKey, x: np.ndarray) -> np.ndarray:
    """This party's shares ``(N, ..., m)`` int64 of ``f(x)`` for ``x`` ``(N, ...)`` in
    ``[0, 2^bits)``: element ``e``'s key at every point ``x[e, ...]`` (BCG+21 Fig. 1, Eval): one
    node expansion per level and point, on the side of the point's bit, into reused buffers.

    Two layouts of the same steps: below :data:`MANY_POINTS` points, whole 128-bit blocks per
    numpy call (the fewest calls per level); from there, each 64-bit word of the blocks and each
    payload word as its own array (numpy's loops over two-word rows cost more than the calls).
    Up to :data:`FEW_POINTS` points, the same steps on Python integers."""
    x = np.asarray(x).astype(np.uint64)
    shape = x.shape
    bits, n, m = key.bits, shape[0], key.cw_out.shape[1]
    per = int(np.prod(shape[1:], dtype=np.int64))
    x = x.reshape(n, per)
    if 0 < n * per <= FEW_POINTS:
        v = _eval_int(party, key, x).reshape(*shape, m)
        return -v if party else v
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)[:, None, None]
    xbits = (x[None] >> shifts) & _ONE  # (bits, n, per)
    blocks = blocks_per_side(m)
    if n * per >= MANY_POINTS:
        s, t, v = _eval_many(party, key, xbits, _MMO((n, per, blocks, 2)))
    else:
        s, t, v = _eval_few(party, key, xbits, _MMO((bits, n, per, blocks, 2)))
    v += _leaf(s, m, _constants(blocks_per_side(m)))
    v += key.cw_out[:, None, :] & np.negative(t).view(np.int64)[..., None]
    v = v.reshape(*shape, m)
    return -v if party else v


def _eval_int(party: int, key: DcfKey, x: np.ndarray) -> np.ndarray:
    """:func:`evaluate`'s level loop and leaf on Python integers, before party 1's sign: shares
    ``(n, per, m)`` int64 for points ``x`` ``(n, per)``; every point's expansion (the side of its
    bit) in one integer per level, one ECB call per level."""
    bits, (n, per), m = key.bits, x.shape, key.cw_out.shape[1]
    blocks = blocks_per_side(m)
    side = 128 * blocks
    count = n * per
    nbytes = count * side // 8
    spread = sum(1 << (128 * j) for j in range(blocks))
    consts = (_block_constants((0,), 0, blocks), _block_constants((1,), 0, blocks))
    update = _ecb().update
    from_bytes = int.from_bytes
    M64, M128, SEED = _M64, _M128, _SEED
    points = x.reshape(-1).tolist()
    owner = [k // per for k in range(count)]
    at = [k * side for k in range(count)]
    root = key.root.astype(np.uint64).tolist()
    s = [(root[e][0] | (root[e][1] << 64)) & SEED for e in owner]
    t = [party] * count
    v = [[0] * m for _ in range(count)]  # sums mod 2^64 taken at the end
    raw = key.cw_seed.astype("<u8").tobytes()
    cws = [from_bytes(raw[j : j + 16], "little") for j in range(0, len(raw), 16)]  # (level, element)
    cwv = key.cw_v.view(np.uint64).tolist()
    cwt = key.cw_t.tolist()
    offs = [128 + 64 * w for w in range(m)]
    for i in range(bits):
        shift = bits - 1 - i
        sides = [(p >> shift) & 1 for p in points]
        xi, ci = 0, 0
        for k in range(count):
            xi |= s[k] << at[k]
            ci |= consts[sides[k]] << at[k]
        xi = xi * spread ^ ci
        y = from_bytes(update(xi.to_bytes(nbytes, "little")), "little") ^ xi
        vals, bits_t = cwv[i], cwt[i]
        for k in range(count):
            e, tk = owner[k], t[k]
            yk = y >> at[k] if k else y
            b0 = yk & M128
            vk = v[k]
            if tk:
                t[k] = (b0 & 1) ^ bits_t[e][sides[k]]
                s[k] = (b0 & SEED) ^ cws[i * n + e]
                ve = vals[e]
                for w, q in enumerate(offs):
                    vk[w] += ((yk >> q) & M64) + ve[w]
            else:
                t[k] = b0 & 1
                s[k] = b0 & SEED
                for w, q in enumerate(offs):
                    vk[w] += (yk >> q) & M64
    leaf = 128 * (blocks - 1)
    xi = 0
    for k in range(count):
        xi |= s[k] << (k * leaf)
    xi *= sum(1 << (128 * j) for j in range(blocks - 1))
    one, ci = _block_constants((LEAF,), 1, blocks), 0
    for k in range(count):
        ci |= one << (k * leaf)
    xi ^= ci
    y = from_bytes(update(xi.to_bytes(count * leaf // 8, "little")), "little") ^ xi
    out = key.cw_out.view(np.uint64).tolist()
    for k in range(count):
        yk, vk, extra = y >> (k * leaf), v[k], out[owner[k]] if t[k] else [0] * m
        for w in range(m):
            vk[w] = (vk[w] + ((yk >> (64 * w)) & M64) + extra[w]) & M64
    return np.array(v, dtype=np.uint64).view(np.int64).reshape(n, per, m)


def _eval_few(party: int, key: DcfKey, xbits: np.ndarray, mmo: _MMO):
    """The level loop on whole blocks: seeds ``(n, per, 2)``, control bits, values ``(n, per, m)``.
    Per level only the seed path (``mmo`` holds every level's blocks); the value words and their
    corrections are summed over the levels at the end."""
    bits, n, per = xbits.shape
    m, blocks = key.cw_out.shape[1], mmo.inp.shape[-2]
    consts = _constants(blocks)
    s = np.repeat(key.root.astype(np.uint64)[:, None, :], per, axis=1)
    s[..., 0] &= _NOT_ONE
    ts = np.empty((bits + 1, n, per), dtype=np.uint64)  # the control bit entering each level
    ts[0] = party
    keep = np.array([_NOT_ONE, ~np.uint64(0)], dtype=np.uint64)
    inputs = np.take(consts, xbits.astype(np.intp), axis=0)  # (bits, n, per, blocks, 2)
    cw_t = key.cw_t.astype(np.uint64)[:, :, None, :]  # (bits, n, 1, 2)
    cw_t = np.where(xbits == 1, cw_t[..., 1], cw_t[..., 0])  # the side taken, every level
    cw_seed = key.cw_seed[:, :, None, :]
    inp, raw, out = mmo.inp, mmo._raw, mmo.out
    size = inp[0].nbytes
    for i in range(bits):
        np.bitwise_xor(s[..., None, :], inputs[i], out=inp[i])
        # the level's ECB output into its place (the buffer's slack is after the last level)
        mmo._enc.update_into(inp[i].reshape(-1).view(np.uint8), raw[i * size :])
        s = out[i, ..., 0, :] ^ inp[i, ..., 0, :]
        t, tn = ts[i], ts[i + 1]
        np.bitwise_and(s[..., 0], _ONE, out=tn)
        s &= keep
        s ^= cw_seed[i] * t[..., None]
        tn ^= t & cw_t[i]
    out ^= inp
    vals = out[..., 1:, :].reshape(bits, n, per, 2 * (blocks - 1))[..., :m].view(np.int64)
    v = vals.sum(axis=0)
    v += (key.cw_v[:, :, None, :] * ts[:bits, ..., None].view(np.int64)).sum(axis=0)
    return s, ts[bits], v


def _eval_many(party: int, key: DcfKey, xbits: np.ndarray, mmo: _MMO):
    """The level loop on word arrays: the seed's low and high words, each payload word."""
    bits, n, per = xbits.shape
    m, blocks = key.cw_out.shape[1], mmo.inp.shape[-2]
    root = key.root.astype(np.uint64)
    lo = np.repeat((root[:, 0] & _NOT_ONE)[:, None], per, axis=1)
    hi = np.repeat(root[:, 1][:, None], per, axis=1)
    t = np.full((n, per), party, dtype=np.uint64)
    v = np.zeros((m, n, per), dtype=np.int64)
    sides = xbits << np.uint64(32)  # the side's bit in the block constants' low word
    cw_lo, cw_hi = key.cw_seed[..., 0][:, :, None], key.cw_seed[..., 1][:, :, None]
    cw_l, cw_r = (key.cw_t[..., k].astype(np.uint64)[:, :, None] for k in (0, 1))
    cw_v = np.moveaxis(key.cw_v, 2, 1)[..., None]  # (bits, m, n, 1)
    out = mmo.out
    for i in range(bits):
        for j in range(blocks):  # the constants of _constants: (side << 32 | j, TAG)
            np.bitwise_xor(lo, sides[i] | np.uint64(j), out=mmo.inp[..., j, 0])
            np.bitwise_xor(hi, _TAG, out=mmo.inp[..., j, 1])
        mmo()
        tn = out[..., 0, 0] & _ONE
        tm = np.negative(t)
        lo = out[..., 0, 0] & _NOT_ONE
        lo ^= cw_lo[i] & tm
        hi = out[..., 0, 1] ^ (cw_hi[i] & tm)
        tn ^= t & np.where(xbits[i], cw_r[i], cw_l[i])
        for w in range(m):
            v[w] += out[..., 1 + w // 2, w % 2].view(np.int64)
            v[w] += cw_v[i, w] & tm.view(np.int64)
        t = tn
    return np.stack([lo, hi], axis=-1), t, np.moveaxis(v, 0, -1)
