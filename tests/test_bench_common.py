"""benchmarks.common helpers that read the environment."""

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
