"""benchmarks.common helpers: environment overrides and the interleaved timer."""

import pytest

from benchmarks.common import env_batch


def test_env_batch_unset_or_empty_means_the_official_batch(monkeypatch):
    monkeypatch.delenv("SKELFAST_TEST_BATCH", raising=False)
    assert env_batch("SKELFAST_TEST_BATCH") is None
    monkeypatch.setenv("SKELFAST_TEST_BATCH", " ")
    assert env_batch("SKELFAST_TEST_BATCH") is None
    monkeypatch.setenv("SKELFAST_TEST_BATCH", "16")
    assert env_batch("SKELFAST_TEST_BATCH") == 16


@pytest.mark.parametrize("value", ["0", "-4", "abc", "1.5"])
def test_env_batch_rejects_a_bad_value_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("SKELFAST_TEST_BATCH", value)
    with pytest.raises(ValueError, match="SKELFAST_TEST_BATCH=.*positive integer"):
        env_batch("SKELFAST_TEST_BATCH")


def test_time_interleaved_times_the_columns_in_turns():
    from benchmarks.common import time_interleaved

    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    timings = time_interleaved(fns, repeats=3, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up, once each
    assert calls[3:] == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]  # alternating order
    assert set(timings) == {"a", "b", "c"}
    assert all(t.q20_ms <= t.median_ms <= t.q80_ms for t in timings.values())
