"""benchmarks.common helpers: environment overrides, the interleaved timer, the child-process runner."""

import pytest

from benchmarks.common import cpu_description, env_batch


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


def test_compile_limits_stop_a_block_past_its_time_or_memory_allowance():
    """The guard around the methods benchmark's torch.compile: a block that runs past its seconds, or
    grows the process past its allowance (the kernel OOM-killed a whole run compiling ISC's
    reference), raises CompileTimeout naming which, within about a second of it."""
    import time

    import torch

    from benchmarks.bench_methods import CompileTimeout, _compile_limits, resident_bytes

    with pytest.raises(CompileTimeout, match="took > 1 s"):
        with _compile_limits(1.0, None):
            time.sleep(5)
    if resident_bytes() is None:
        pytest.skip("the memory check reads /proc/self/statm")
    held = []
    with pytest.raises(CompileTimeout, match="grew the process by > 0.1 GiB"):
        with _compile_limits(60.0, 100 * 2**20):
            while len(held) < 100:  # 800 MiB at most, should the check not fire
                held.append(torch.ones(2 * 2**20))  # 8 MiB, written: resident
                time.sleep(0.05)
    assert 100 * 2**20 // (8 * 2**20) <= len(held) < 100


def test_run_in_child_returns_the_result_computed_in_another_process():
    import os

    from benchmarks.common import run_in_child

    child_pid = run_in_child(os.getpid)
    assert isinstance(child_pid, int) and child_pid != os.getpid()
    assert run_in_child(divmod, 17, 5) == (3, 2)


def test_run_in_child_names_an_exception_and_a_killed_child():
    """A failure in the child comes back as ChildFailed with its traceback; a child that dies without
    answering (here by SIGKILL, what the kernel's out-of-memory killer sends) as ChildFailed with its
    exit code, instead of taking the parent down or hanging on the pipe."""
    import signal

    from benchmarks.common import ChildFailed, run_in_child

    with pytest.raises(ChildFailed, match=r"(?s)raised in its child process.*ValueError: invalid literal"):
        run_in_child(int, "not a number")
    with pytest.raises(ChildFailed, match="exit code -9 .*out-of-memory"):
        run_in_child(signal.raise_signal, signal.SIGKILL)


ICE_LAKE = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 106
model name\t: Intel(R) Xeon(R) Processor @ 2.80GHz
flags\t\t: fpu sse2 avx2 avx512f avx512bw

processor\t: 1
model name\t: something else
"""


def test_cpu_description_names_the_model_and_vector_unit():
    # the first processor's block only; the model numbers tell Xeons with the same generic name apart
    assert cpu_description(ICE_LAKE) == "Intel(R) Xeon(R) Processor @ 2.80GHz [family 6 model 106, AVX-512]"
    sapphire = ICE_LAKE.replace(": 106", ": 143").replace("avx512bw", "avx512bw amx_tile")
    assert cpu_description(sapphire) == "Intel(R) Xeon(R) Processor @ 2.80GHz [family 6 model 143, AMX]"
    epyc = "cpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: sse2 avx2\n"
    assert cpu_description(epyc) == "AMD EPYC 7B13 [family 25 model 1, AVX2]"
    assert cpu_description("processor\t: 0\nmodel name\t: Some CPU\n") == "Some CPU"
