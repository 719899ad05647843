"""The code reward on MBPP (``../shared/data/mbpp``) through the real executor and sandbox: each
reference solution scores 1.0 on its own tests and a wrong solution 0.0 (``tasks.rewards.mbpp``).
Every 8th task here (~25 s on a busy 2-core box); ``make bench-rewards`` runs all 974.
"""

from __future__ import annotations

import pytest

from tasks.rewards.mbpp import check, mbpp_rows

# A reference whose own tests take longer than the code reward's row budget on a loaded 2-core box.
KNOWN_SLOW = {123: "amicable_numbers_sum(9999) takes seconds of CPU: over ROW_BUDGET_S under load"}


@pytest.mark.slow
def test_mbpp_references_pass_and_wrong_solutions_fail():
    tasks = mbpp_rows()
    assert len(tasks) == 974
    sample = [t for k, t in enumerate(tasks) if k % 8 == 0 and t["task_id"] not in KNOWN_SLOW]
    refs, wrongs, res, wall = check(sample)
    print(f"MBPP sample: {len(sample)} tasks, {2 * len(sample)} completions in {wall:.1f} s")
    assert (res.errors, res.timeouts) == (0, 0), res.error_messages
    assert refs == set() and wrongs == set()
