"""Pieces shared by the tests of `synthalign.testing`: the tie-aware margin, a broken objective, failed checks.

Each deliberately broken objective of those tests has one known defect; a test asserts that the check aimed at
that defect fails (and, where the defect cannot affect it, that an unrelated check still passes, so the
failure is the check's doing and not a crash of the battery).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import synthalign as sa
from synthalign.testing import CheckReport

# register=False keeps the registry of the test process unchanged.


def margin(logp_a, logp_b):
    """ln[pi(a)/pi(b)], with two zero-probability responses read as a tie (synthalign's convention)."""
    return torch.where(torch.isinf(logp_a) & (logp_a == logp_b), torch.zeros_like(logp_a), logp_a - logp_b)


@sa.objective("mean_over_pairs", register=False)
def mean_over_pairs(logp_chosen, logp_rejected, *, gamma):
    # Reduces over the cells: the framework needs one loss per cell.
    return -F.logsigmoid(gamma * (logp_chosen - logp_rejected)).mean()


def _failed(report: CheckReport) -> set[str]:
    return {r.name for r in report.failures}
