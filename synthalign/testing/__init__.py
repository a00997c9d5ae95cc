"""Test tools for objectives: hypothesis strategies and a conformance battery any objective can be run through.

Two halves, both for users as much as for synthalign's own tests:

* **Strategies** (`worlds`, `policies`, `log_probs`, `preference_datasets`;
  `synthalign.testing.strategies`) generating valid random inputs for
  property-based tests.  They need `hypothesis`, a development dependency
  (``pip install "synthalign[dev]"``); it is imported when a strategy is built,
  so importing this package does not need it.
* **Checks of iterative methods** (Nash-MD, online IPO, SPPO, extragradient: registered `Method`s,
  `synthalign.registry.nash`): `check_method(method)` (`synthalign.testing.method_checks`).
* **Checks**: `check_objective(objective, ...)` runs a battery of checks on an
  `Objective` (built-in or user-defined with `@synthalign.objective`) and
  returns a `CheckReport`, one `CheckResult` per check (name, passed, detail);
  `parametrize_with_checks([...])` turns the battery into one pytest item per
  (objective, check), as scikit-learn's `parametrize_with_checks` does for
  estimators (ids like ``"pmle-gradcheck"``).  The decorator needs `pytest`.

The checks (`CHECKS`, in order):

===================== =====================================================================
finite_extreme        value and gradient finite at logits up to ±1e4, gamma in {1e-3, 1, 1e3}
zero_probability      no NaN with zero-probability responses (in pi, or in pi* and R*); a
                      finite value has a NaN-free gradient
gradcheck             `torch.autograd.gradcheck` (float64) of the population and empirical loss
gradgradcheck         the same for second derivatives, which the Newton solver uses
weight_consistency    loss from counts = mean of the objective's fn over the explicit pairs
                      (also with every pair repeated), and the population loss = the
                      law-weighted sum of fn over the cells
pair_order_invariance permuting the explicit pairs permutes the per-pair losses and leaves the
                      mean unchanged
pair_swap_symmetry    swapping a cell's two responses is the same as flipping its label
                      (precise forms below); "not applicable" where no form is declared
elementwise           perturbing one cell's (pair objectives) or one prompt's (prompt
                      objectives) input changes that cell's or prompt's output only
exact_vs_sampled      the mean of the empirical loss over replicate datasets lies within 4
                      standard errors of the population loss
closed_form           a declared closed form is the minimizer the Newton solver finds
population_minimizer  `fit` on the population law: forward KL to pi*, consistency and the
                      declared minimizer, when given
degeneracy            fits on small data: entropy against H(pi*), mass on unobserved responses
===================== =====================================================================

Pair-swap symmetry, precisely.  For a cell (x, a, b) let l(a, b) be the loss
when a is chosen over b, every input of the cell swapped with it (pi, pi0, R̂;
the reward margin changes sign).  Two forms exist:

* ``"loss"``: l(a, b) = l(b, a).  The loss does not depend on which response
  won, only on what is attached to the responses (REBEL, whose label is R̂'s
  margin, and every objective on unlabelled pairs, distillation included: the
  framework stores the draw order of an unlabelled pair in the (chosen,
  rejected) slot, so such a loss must not depend on it).  Default for
  ``data="pairs"``.
* ``"likelihood"``: exp(−l(a, b)) + exp(−l(b, a)) = 1.  The loss is the negative
  log-likelihood of the label under a preference model P_pi, so swapping the
  pair with the label flipped gives the complementary event: P_pi(a ≻ b) +
  P_pi(b ≻ a) = 1 (spec §6.1, §6.4).  PMLE, DPO, the reward model.

Labelled-pair objectives declare their form with `swap_symmetry=`; without a
declaration the check is "not applicable" (IPO's squared loss has neither form).
Prompt objectives take no pairs: not applicable.
"""

from synthalign.testing.checks import CHECKS, check_objective
from synthalign.testing.method_checks import MethodCheckOptions, check_method
from synthalign.testing.pytest_glue import parametrize_with_checks
from synthalign.testing.report import CheckOptions, CheckReport, CheckResult
from synthalign.testing.strategies import log_probs, policies, preference_datasets, worlds

__all__ = [
    "CHECKS",
    "CheckOptions",
    "CheckReport",
    "CheckResult",
    "MethodCheckOptions",
    "check_method",
    "check_objective",
    "log_probs",
    "parametrize_with_checks",
    "policies",
    "preference_datasets",
    "worlds",
]
