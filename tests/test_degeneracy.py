"""Tests of the degeneracy experiment (`synthalign.experiments.degeneracy`): each claim at the quick size."""

from __future__ import annotations

import json
import math

import pytest
import torch

import synthalign as sa
from synthalign.experiments import degeneracy, fig1


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("degeneracy")
    args = degeneracy.Args(out=str(out), size="quick", progress=False)
    return args, degeneracy.run(args), out


@pytest.fixture(scope="module")
def world():
    return sa.World.paper_toy(0, logit_scale=1.0)


def test_quick_run_writes_json_and_png(quick):
    _, results, out = quick
    assert json.loads((out / "degeneracy.json").read_text())["experiment"] == "degeneracy"
    assert (out / "degeneracy.png").stat().st_size > 0
    assert "separable prompts" in degeneracy.summary(results)


# ----------------------------------------------------------------------------- part A: RLHF's dilemma


def test_rlhf_collapses_onto_the_argmax_as_beta_goes_to_zero(quick, world):
    # p ∝ pi0 e^{r/beta}: p(a)/p(top) = (pi0(a)/pi0(top)) e^{−(r_top − r_a)/beta}, so the mass off the
    # argmax is ε ≤ Σ_{a≠top} of those ratios, and H(p) ≤ h(ε) + ε ln(A − 1) (grouping the others).
    _, results, _ = quick
    pop = results["population"]
    beta = pop["betas"][0]
    reward, ref = world.true_reward, world.reference.logp
    top = reward.argmax(-1, keepdim=True)
    ratios = torch.exp(ref - ref.gather(-1, top) - (reward.gather(-1, top) - reward) / beta)
    others = torch.ones_like(ratios, dtype=torch.bool).scatter(-1, top, False)
    eps = torch.where(others, ratios, torch.zeros_like(ratios)).sum(-1)
    assert (eps <= 0.5).all()  # h is increasing on [0, 1/2]
    binary = -(torch.special.xlogy(eps, eps) + (1 - eps) * torch.log1p(-eps))
    bound = float((world.prompt_dist * (binary + eps * math.log(world.n_responses - 1))).sum())
    assert pop["entropy"][0] <= bound
    assert pop["argmax_mass"][0] >= 1 - float((world.prompt_dist * eps).sum())
    assert bound < 1e-6 * results["world"]["target_entropy"]


def test_rlhf_forward_kl_grows_like_one_over_beta(quick, world):
    # −ln p(a) ≥ −ln(p(a)/p(top)) = (r_top − r_a)/beta + ln(pi0(top)/pi0(a)), so
    # KL(pi* ‖ p) ≥ −H(pi*) + Σ_a pi*(a) [(r_top − r_a)/beta + ln(pi0(top)/pi0(a))].
    _, results, _ = quick
    pop = results["population"]
    reward, ref, target = world.true_reward, world.reference.logp, world.target.probs
    top = reward.argmax(-1, keepdim=True)
    for beta, measured in zip(pop["betas"][:3], pop["forward_kl"][:3], strict=True):
        per_prompt = (target * ((reward.gather(-1, top) - reward) / beta + ref.gather(-1, top) - ref)).sum(-1)
        bound = float((world.prompt_dist * per_prompt).sum()) - results["world"]["target_entropy"]
        assert measured >= bound - 1e-9
        assert bound > 100 * results["world"]["rlhf_floor"]


def test_every_fixed_beta_underfits(quick):
    # The population sweep never goes below the exact floor (the floor is the minimum over beta).
    _, results, _ = quick
    floor = results["world"]["rlhf_floor"]
    assert min(results["population"]["forward_kl"]) >= floor - 1e-12
    assert floor > 0.1 * results["world"]["kl_target_reference"]


def test_fixed_beta_converges_to_the_floor_not_to_zero(quick, world):
    # With data, FKL ≥ floor + (first-order term of mean ≈ 0) per replicate (see test_fig1), so the
    # median stays above the floor up to 3 standard errors of a median, 3 · 1.2533 · sd / √R.
    args, results, _ = quick
    data, floor = results["rlhf_data"], results["world"]["rlhf_floor"]
    fixed = data["rlhf_fixed"]["forward_kl"]
    assert fixed["median"][-1] >= floor - 3 * 1.2533 * fixed["std"][-1] / math.sqrt(args.n_replicates)
    # RKL at beta = 0 goes to 0 at rate c/n (c from the Fisher information, margin 1.5 for a median
    # of 12 replicates with sd/mean ≈ 0.3: 1.2533 · 0.3/√12 ≈ 11% standard error), below the floor.
    n_max = data["n"][-1]
    rate = fig1.rkl_asymptotic_constant(world) / n_max
    assert data["rkl_beta0"]["forward_kl"]["median"][-1] <= 1.5 * rate
    assert 1.5 * rate < floor / 5


def test_beta_going_to_zero_collapses(quick, world):
    _, results, _ = quick
    data = results["rlhf_data"]
    entropy = data["rlhf_schedule"]["entropy"]["median"]
    assert all(later < earlier for earlier, later in zip(entropy, entropy[1:], strict=False))
    # At the last n, beta_n = beta_fixed (n_min/n_max)^0.5: on the true reward the entropy there is tiny,
    # and the fitted policy follows it down (well below a tenth of pi*'s entropy).
    beta_last = data["schedule_betas"][-1]
    population = float(sa.entropy(sa.rlhf_policy(world.true_reward, world.reference, beta_last)))
    assert population < 0.01 * results["world"]["target_entropy"]
    assert entropy[-1] < 0.1 * results["world"]["target_entropy"]
    fkl = data["rlhf_schedule"]["forward_kl"]["median"]
    assert fkl[-1] > fkl[0]
    assert fkl[-1] > results["world"]["kl_target_reference"]  # worse than not training at all


# ----------------------------------------------------------------------------- part B: small data


def test_small_data_is_separable(quick):
    # n = 20 pairs over 10 prompts: a strongly connected comparison graph on 10 responses needs at least
    # 10 pairs in its prompt, and P(Binomial(20, 0.1) ≥ 10) ≈ 7e-6, so every prompt is separable.
    _, results, _ = quick
    small = results["small_data"]
    assert small["n"][0] == 20
    assert small["separable_fraction"][0] == 1.0


def _reports(results):
    for objective, by_beta in results["small_data"]["fits"].items():
        for beta, reports in by_beta.items():
            for k, report in enumerate(reports):
                yield objective, float(beta), k, report


def test_every_small_data_figure_comes_from_a_certified_fit(quick):
    _, results, _ = quick
    for objective, beta, k, report in _reports(results):
        assert report["certified"] == 1.0, (objective, beta, k, report["status"])
        assert report["largest_gap"] <= 1e-10
        if beta == 0:
            assert report["shifted_start"]["certified"] == 1.0, (objective, k)
            # separable data with unobserved responses: never "the" minimizer
            assert "optimal" not in report["status"], (objective, k)


def test_unregularized_minimizer_set_spans_the_unobserved_mass(quick):
    # At beta = 0 the loss depends only on log-ratios of observed responses: moving the mass onto
    # unobserved ones changes it by rounding only (losses of order 1: a few ulps, < 1e-12), and a fit
    # started there is certified with the same loss (both within the tolerance 1e-10 of the minimum:
    # the losses agree to 1e-9) but more mass where there is no data.  The certificate's
    # range [inf, sup] over the minimizer set contains both.
    # The record's numbers are float64: read them back as float64 (torch.tensor of Python floats
    # would round them to float32, 2^-24 relative, far above the rtol below).
    _, results, _ = quick
    for objective, beta, k, report in _reports(results):
        change = torch.tensor(report["loss_change_after_shift"], dtype=torch.float64)
        kl_change = torch.tensor(report["weighted_kl_change_after_shift"], dtype=torch.float64)
        if beta == 0:
            assert change.abs().max() <= 1e-12, (objective, k)
            assert report["shifted_start"]["largest_loss_difference"] <= 1e-9, (objective, k)
            first = torch.tensor(report["unobserved_mass_each"], dtype=torch.float64)
            second = torch.tensor(report["shifted_start"]["unobserved_mass"], dtype=torch.float64)
            bounds = torch.tensor(report["unobserved_mass_range"], dtype=torch.float64)
            for mass in (first, second):
                assert ((bounds[:, 0] <= mass + 1e-12) & (mass <= bounds[:, 1] + 1e-12)).all(), (objective, k)
            # where the range is not a point the two starts end at different members of the set (where
            # the logits diverge, Newton raises observed winners and the returned unobserved mass falls
            # from either start: what a fit returns there is the solver's choice, not the objective's)
            spread = bounds[:, 1] > bounds[:, 0]
            assert spread.any(), (objective, k)
            assert (second[spread] > first[spread]).all(), (objective, k)
        else:
            assert (change > 0).all(), (objective, beta, k)
            torch.testing.assert_close(change, beta * kl_change, rtol=1e-9, atol=1e-12)


def test_unregularized_fits_drive_observed_losers_to_zero(quick):
    # On separable data the infimum is at the boundary: a solver stopped at gradient ≤ 1e-10 has pushed a
    # loser's margin to σ(−γΔ)·w ≤ 1e-10 with pair weight w ≥ 1/n, i.e. Δ ≥ ln(1e9/n)/γ ≈ 35 at n = 100,
    # γ = 0.5: the loser's probability is far below 1e-6.  The forward KL is then worse than pi0's.
    _, results, _ = quick
    for objective, beta, k, report in _reports(results):
        if beta != 0:
            continue
        assert report["min_observed_logp"]["median"] < math.log(1e-6), (objective, k)
        assert report["worse_than_reference"] >= 0.9, (objective, k)


def test_regularized_fits_keep_at_least_pi0_mass_where_there_is_no_data(quick):
    # Stationarity in an unobserved logit: pi(u)(ln(pi(u)/pi0(u)) − KL) · beta · w_x/n = gradient, so
    # |ln(pi(u)/pi0(u)) − KL| ≤ slack = max|gradient| / (beta · w_x/n · pi(u)) + the rounding of the
    # logarithms; the experiment reports the largest ratio error/slack.  Since KL ≥ 0,
    # ln(pi(u)/pi0(u)) ≥ −slack: pi(u) ≥ pi0(u) up to the slack, at every beta > 0.
    _, results, _ = quick
    small = results["small_data"]
    for objective, beta, k, report in _reports(results):
        if beta == 0:
            assert "unobserved_stationarity_error_over_slack" not in report
            continue
        assert report["unobserved_stationarity_error_over_slack"] <= 1.0, (objective, beta, k)
        assert report["unobserved_log_ratio_min"] >= -report["unobserved_slack_max"], (objective, beta, k)
        assert report["unobserved_mass"]["median"] >= small["reference_unobserved_mass"][k]["median"] * (1 - 1e-9)


def test_args_validation_names_the_argument():
    for field, value in [
        ("objectives", ("ppo",)),
        ("regularized_betas", (0.0,)),
        ("mass_shift", -1.0),
        ("fixed_beta", 0.0),
        ("max_iter", 0),
        ("replicates", 1),
    ]:
        with pytest.raises(ValueError, match=field):
            degeneracy.Args(**{field: value})
