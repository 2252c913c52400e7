"""The augmentation noise stream in plain PyTorch: the oracle of the C++ and Triton noise.

Standard normal number i of the stream keyed by ``key`` is Box-Muller output ``i & 3`` of the
Philox4x32-10 counter ``i >> 2``. Philox and the word-to-uniform rule are Triton's
(``triton/language/random.py``: counter (i >> 2, 0, 0, 0), key (key & 0xffffffff, key >> 32); a word
is bitcast to int32, negatives folded to -x - 1, times 4.6566127342e-10 in float32). Words (0, 1)
and (2, 3) each give a pair: r = sqrt(-2 log max(u_a, 1e-7)), th = 6.283185307179586 * u_b (float32),
normals (r cos th, r sin th). ``tl.randn`` keeps one normal per Philox call; four cut its cost by
four on the CPU.

Words are held in int64 tensors masked to 32 bits: a 32 x 32-bit product fits 64 bits, so int64's
wrap-around keeps its exact bits. The integers match Triton's ``tl.randint4x`` and the C++ kernel bit
for bit; log, sin and cos are torch's, within a few ulps of theirs.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
ROUNDS = 10


def philox4x32(
    key: torch.Tensor, counter: torch.Tensor, c1: int = 0, c2: int = 0, c3: int = 0
) -> tuple[torch.Tensor, ...]:
    """The four words of Philox4x32-10 for counter (counter, c1, c2, c3), as int64 in [0, 2^32).

    key: int64 (its two 32-bit halves are the Philox key), counter: int64 in [0, 2^32); broadcast
    together. With c1 = c2 = c3 = 0 this is Triton's ``tl.randint4x(key, counter)``."""
    key, counter = key.to(torch.int64), counter.to(torch.int64)
    shape = torch.broadcast_shapes(key.shape, counter.shape)
    c0 = (counter & _MASK32).expand(shape).clone()
    c1, c2, c3 = (torch.full(shape, c & _MASK32, dtype=torch.int64, device=c0.device) for c in (c1, c2, c3))
    # the key schedule keeps the key's own (broadcastable) shape: it is the same for every counter
    k0 = key & _MASK32
    k1 = (key >> 32) & _MASK32
    for _ in range(ROUNDS):
        pb = c2 * _ROUND_B
        pa = c0 * _ROUND_A
        # in place where a temporary is ours: 4 new tensors a round instead of 14
        c0 = (pb >> 32).bitwise_and_(_MASK32).bitwise_xor_(c1).bitwise_xor_(k0)
        c2 = (pa >> 32).bitwise_and_(_MASK32).bitwise_xor_(c3).bitwise_xor_(k1)
        c1, c3 = pb.bitwise_and_(_MASK32), pa.bitwise_and_(_MASK32)
        k0 = (k0 + _KEY_A) & _MASK32
        k1 = (k1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


def uniform_from_word(word: torch.Tensor) -> torch.Tensor:
    """Triton's ``uint_to_uniform_float`` for 32-bit words (int64 in [0, 2^32)) -> float32 [0, 1)."""
    signed = word.to(torch.int32)  # the low 32 bits, two's complement (modular conversion)
    folded = signed ^ (signed >> 31)  # -x - 1 where negative
    return folded.to(torch.float32) * torch.tensor(4.6566127342e-10, dtype=torch.float32)


def box_muller(word_a: torch.Tensor, word_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two words -> (r cos th, r sin th), float32."""
    r = torch.sqrt(-2.0 * torch.log(torch.clamp(uniform_from_word(word_a), min=1.0e-7)))
    th = torch.tensor(6.283185307179586, dtype=torch.float32) * uniform_from_word(word_b)
    return r * torch.cos(th), r * torch.sin(th)


def normal(key: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Normal number ``index`` of the stream keyed by ``key`` (broadcast together) -> float32.

    key: int64 >= 0; index: int64 in [0, 2^34)."""
    index = index.to(torch.int64)
    w0, w1, w2, w3 = philox4x32(key, index >> 2)
    slot = (index & 3).expand_as(w0)
    first = slot < 2
    cos, sin = box_muller(torch.where(first, w0, w2), torch.where(first, w1, w3))
    return torch.where(slot % 2 == 0, cos, sin)


def normal_fill(key: torch.Tensor | int, count: int) -> torch.Tensor:
    """Normals 0 .. count - 1 of the stream of each key: key (K,) int64 (or an int) -> (K, count)
    float32 (or (count,)). One Philox call per four normals, as the kernels do: the same values as
    ``normal(key, arange(count))`` at a quarter of the integer work."""
    keys = torch.as_tensor(key, dtype=torch.int64)
    counters = torch.arange((count + 3) // 4, device=keys.device)
    w0, w1, w2, w3 = philox4x32(keys.reshape(-1, 1), counters)
    cos01, sin01 = box_muller(w0, w1)
    cos23, sin23 = box_muller(w2, w3)
    z = torch.stack([cos01, sin01, cos23, sin23], dim=-1).flatten(1)[:, :count]
    return z.reshape(*keys.shape, count)


def dropout_keep(seed: int, numel: int, p: float) -> torch.Tensor:
    """The keep mask of skelfast's seeded dropout: element i is kept where word ``i & 3`` of counter
    ``i >> 2`` (``tl.randint4x(seed, i >> 2)``) is at least round(p * 2^32) -> bool (numel,)."""
    counters = torch.arange((numel + 3) // 4, dtype=torch.int64)
    words = torch.stack(philox4x32(torch.tensor(seed, dtype=torch.int64), counters), dim=1).reshape(-1)
    threshold = min(round(p * 2**32), 2**32 - 1)
    return words[:numel] >= threshold


def keep_mask_bytes(seed: int, numel: int, p: float) -> torch.Tensor:
    """The byte keep mask of the fused BatchNorm tails' dropout (``keep_mask_cpu``): element i is kept
    where byte ``i & 3`` (little-endian: (word >> 8 j) & 255) of word ``(i >> 2) & 3`` of counter
    ``i >> 4`` is at least 256 p, p a multiple of 1/256 -> bool (numel,)."""
    counters = torch.arange((numel + 15) // 16, dtype=torch.int64)
    words = torch.stack(philox4x32(torch.tensor(seed, dtype=torch.int64), counters), dim=1).reshape(-1)
    data = torch.stack([(words >> (8 * j)) & 0xFF for j in range(4)], dim=1).reshape(-1)
    return data[:numel] >= round(p * 256)
