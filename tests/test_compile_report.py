"""``skelfast bench --compile-report``: the table, and the exit status on spills, overflow and failures."""

import json

from skelfast import aot, compile_report


def _row(**changes):
    row = {
        "module": "m", "kernel": "k", "config": "BB=64", "dtype": "fp32", "arch": 90, "registers": 32,
        "spill_bytes": 0, "shared_bytes": 1000, "max_shared": aot.MAX_SHARED[90], "fits": True,
    }  # fmt: skip
    row.update(changes)
    return row


def test_exit_status_flags_spills_overflow_and_failures():
    assert compile_report.exit_status([_row(), _row(arch=80, max_shared=aot.MAX_SHARED[80])]) == 0
    spill = _row(spill_bytes=16, fits=False)
    overflow = _row(shared_bytes=aot.MAX_SHARED[90] + 1, fits=False)
    assert compile_report.exit_status([_row(), spill]) == 1
    assert compile_report.exit_status([overflow]) == 1
    assert compile_report.exit_status([spill, {"module": "m", "kernel": "k", "error": "boom"}]) == 2
    table = compile_report.format_compile_table([spill, overflow, _row(registers=255)])
    assert "SPILLS" in table and "SHARED MEMORY TOO LARGE" in table and "registers at the cap" in table
    # shared memory as a share of the target's limit: 1000 B of 232448 B rounds to 0%, the overflow to 100%
    assert "| 1000 | 0% |" in table and f"| {aot.MAX_SHARED[90] + 1} | 100% |" in table


def test_main_compiles_a_module_for_both_targets(capsys):
    status = compile_report.main(["skelfast.kernels.augment", "--no-model"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| augment_kernel")]
    assert status == 0
    assert len(rows) == 3 * len(aot.ARCHS)  # three streams x (sm_80, sm_90)
    assert sum("| sm_80 |" in r for r in rows) == 3 and sum("| sm_90 |" in r for r in rows) == 3
    assert all(r.endswith("| ok |") or "registers at the cap" in r for r in rows)


def test_a_module_that_cannot_load_is_reported_and_fails_with_status_2(capsys):
    # the worker itself, in-process (no compile happens: the import fails first)
    compile_report._worker(["skelfast.kernels.no_such_module"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1 and "ModuleNotFoundError" in rows[0]["error"]
    assert compile_report.exit_status(rows) == 2
    assert "FAILED" in compile_report.format_compile_table(rows)
