"""The augmentation noise stream (skelfast.reference.philox): Philox4x32-10 against the Random123
known-answer vectors and Triton's tl.randint4x (interpreted), and the normals it gives."""

from __future__ import annotations

import math

import pytest
import torch

from skelfast.reference import philox

# Random123 kat_vectors, philox4x32 with 10 rounds: (counter c0..c3, key k0, k1) -> four words
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "words"), KNOWN_ANSWERS)
def test_philox_matches_random123_known_answers(counter, key, words):
    k = key[1] << 32 | key[0]
    k = k - 2**64 if k >= 2**63 else k  # the key's 64 bits, as int64
    got = philox.philox4x32(torch.tensor(k), torch.tensor(counter[0]), *counter[1:])
    assert [int(w) for w in got] == list(words)


def test_philox_words_equal_triton_randint4x():
    """Bit for bit, for keys with and without a high half and counters up to 2^32 - 1."""
    import triton
    import triton.language as tl

    @triton.jit
    def words_kernel(key_ptr, counter_ptr, out_ptr, n: tl.constexpr):
        key = tl.load(key_ptr)
        i = tl.arange(0, n)
        w0, w1, w2, w3 = tl.randint4x(key, tl.load(counter_ptr + i))
        tl.store(out_ptr + i * 4, w0.to(tl.int64) & 0xFFFFFFFF)
        tl.store(out_ptr + i * 4 + 1, w1.to(tl.int64) & 0xFFFFFFFF)
        tl.store(out_ptr + i * 4 + 2, w2.to(tl.int64) & 0xFFFFFFFF)
        tl.store(out_ptr + i * 4 + 3, w3.to(tl.int64) & 0xFFFFFFFF)

    counters = torch.cat(
        [torch.arange(120), torch.tensor([2**31 - 1, 2**31, 2**32 - 3, 2**32 - 2, 2**32 - 1])]
    )
    counters = torch.cat([counters, torch.zeros(128 - len(counters), dtype=torch.int64)])
    for key in (0, 7, 2**32 + 5, 2**62 - 5):
        out = torch.empty(128, 4, dtype=torch.int64)
        # the counters are uint32 words: pass their int32 bit patterns
        as_int32 = torch.where(counters >= 2**31, counters - 2**32, counters).to(torch.int32)
        words_kernel[(1,)](torch.tensor([key]), as_int32, out, n=128)
        expected = torch.stack(philox.philox4x32(torch.tensor(key), counters), dim=1)
        assert torch.equal(out, expected), key


def test_normals_are_standard_and_independent():
    """2^17 normals of one key: moments, the Kolmogorov-Smirnov distance to N(0, 1), and no
    correlation between the slots of a counter (cos/sin pairs, the two pairs) or between keys.
    Bounds are 4 standard errors (KS: the 0.1% critical value 1.95 / sqrt(n))."""
    n = 2**17
    z = philox.normal_fill(12345, n).double()
    se = 1 / math.sqrt(n)
    assert abs(float(z.mean())) < 4 * se
    assert abs(float(z.var()) - 1) < 4 * math.sqrt(2) * se
    assert abs(float((z**3).mean())) < 4 * math.sqrt(15) * se  # skewness 0 (var of z^3 is 15)
    assert abs(float((z**4).mean()) - 3) < 4 * math.sqrt(96) * se  # kurtosis 3 (var of z^4 is 96)
    cdf = 0.5 * (1 + torch.erf(z.sort().values / math.sqrt(2)))
    ranks = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert float(torch.maximum(ranks - cdf, cdf - (ranks - 1 / n)).max()) < 1.95 / math.sqrt(n)
    slots = z.view(-1, 4)
    for a, b in ((0, 1), (2, 3), (0, 2), (1, 3)):
        assert abs(float(torch.corrcoef(torch.stack([slots[:, a], slots[:, b]]))[0, 1])) < 4 * 2 * se
    other = philox.normal_fill(12346, n).double()
    assert abs(float(torch.corrcoef(torch.stack([z, other]))[0, 1])) < 4 * se


def test_normal_index_picks_the_slot_of_its_counter():
    """normal(key, i) is Box-Muller output i & 3 of counter i >> 2, any index order."""
    key = torch.tensor(99)
    w0, w1, w2, w3 = philox.philox4x32(key, torch.tensor([5]))
    cos01, sin01 = philox.box_muller(w0, w1)
    cos23, sin23 = philox.box_muller(w2, w3)
    got = philox.normal(key, torch.tensor([23, 20, 22, 21]))
    assert torch.equal(got, torch.cat([sin23, cos01, cos23, sin01]))
    assert torch.equal(philox.normal_fill(99, 24)[20:], torch.cat([cos01, sin01, cos23, sin23]))


def test_normal_fill_equals_normal_per_index():
    """The fill (one Philox call per four normals) gives normal(key, i) for every i, for counts
    that are not multiples of four and for several keys at once."""
    keys = torch.tensor([0, 5, 2**40 + 3])
    for count in (1, 6, 37):
        expected = philox.normal(keys[:, None], torch.arange(count)[None, :])
        assert torch.equal(philox.normal_fill(keys, count), expected)
    assert torch.equal(philox.normal_fill(5, 6), expected[1, :6])
