"""The optimality certificate of `fit` (synthalign.estimators.certificate) on the cases a logit-gradient rule misses."""

import dataclasses
import math

import pytest
import torch

import synthalign as sa
import synthalign.evaluate as evaluate
from synthalign.estimators import certificate
from synthalign.estimators.certificate import divergence_direction, mass_move_gap
from synthalign.estimators.derivatives import LogitObjective
from synthalign.evaluate import data_weights, make_context
from synthalign.registry.protocol import get_objective, list_objectives

DTYPE = torch.float64
TOL = 1e-10  # fit's default tolerance in float64


def _unobserved(counts):
    A = counts.shape[-1]
    off = counts * (1 - torch.eye(A, dtype=counts.dtype))
    return (off.sum(-1) + off.sum(-2)) == 0


@pytest.mark.parametrize("n", [20, 100])
@pytest.mark.parametrize("beta", [0.1, 0.01, 0.001])
def test_sparse_data_with_beta_keeps_pi0_shape_on_unobserved_responses(n, beta):
    # At beta > 0 stationarity in an unobserved response u of a prompt with data is
    # ln(pi_u/pi0_u) = KL(pi(x) ‖ pi0(x)) (its logit gradient is beta·(w_x/n)·pi_u·(ln(pi_u/pi0_u) − KL)).
    # A rule |g| ≤ tol stops with pi_u ≈ e^-80 and this condition off by 35–117 nats; the certificate
    # does not, so the condition holds within the slack |g_u| ≤ tol implies: tol / (beta·(w_x/n)·pi_u).
    world = sa.World.paper_toy(0, logit_scale=1.0)
    data = world.sample_preferences(n, 6, seed=n)
    fitted = sa.fit("pmle", data, beta=beta)
    assert bool(fitted.certificate.certified.all()), fitted.status
    assert set(fitted.status) <= {"optimal", "non_unique", "no_finite_minimizer"}
    logp = fitted.policy.logp
    relevant = _unobserved(data.counts) & (data.prompt_counts > 0).unsqueeze(-1)
    assert relevant.any()
    kl = sa.kl_per_prompt(logp, world.reference.logp)
    error = (logp - world.reference.logp - kl.unsqueeze(-1)).abs()
    share = data.prompt_counts / n
    slack = TOL / (beta * share.unsqueeze(-1) * logp.exp())
    assert (error[relevant] <= slack[relevant]).all()
    assert error[relevant].max() < 1.0
    # Re-allocating the unobserved mass as the condition prescribes does not lower the objective.
    prescribed = torch.where(relevant, world.reference.logp + kl.unsqueeze(-1), logp)
    prescribed = torch.log_softmax(prescribed, dim=-1)
    before = sa.empirical_loss("pmle", data, logp, beta=beta)
    after = sa.empirical_loss("pmle", data, prescribed, beta=beta)
    assert (after >= before - TOL).all()


def _zero_reference_world():
    # pi0 gives response 0 probability 0 everywhere; mu never draws response 4.
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(3, 5, generator=generator, dtype=DTYPE)
    reference = torch.randn(3, 5, generator=generator, dtype=DTYPE)
    reference[:, 0] = -math.inf
    behavior = torch.randn(3, 5, generator=generator, dtype=DTYPE)
    behavior[:, 4] = -math.inf
    return sa.World.from_tensors(target=target, reference=reference, behavior=behavior, gamma=0.5, kind="logits")


@pytest.mark.parametrize("objective", ["pmle", "distillation"])
def test_zeros_in_pi0_with_an_unsampled_response_is_a_non_unique_minimizer(objective):
    world = _zero_reference_world()
    data = world.sample_preferences(500, 4, seed=1)
    assert not bool(data.counts[..., 4, :].any() or data.counts[..., :, 4].any())
    fits = [sa.fit(objective, data), sa.fit(objective, data, init=torch.zeros(3, 5, dtype=DTYPE))]
    for fitted in fits:
        # certified stationary, but at beta = 0 the loss is blind to response 4: not "the" minimizer
        assert bool(fitted.certificate.certified.all())
        assert fitted.status == ("non_unique",) * 4
        assert not bool(fitted.converged.any())
        # the mass on the unobserved response ranges over (0, 1) on the minimizer set: every prompt has data
        torch.testing.assert_close(
            fitted.certificate.unobserved_mass_range, torch.tensor([[0.0, 1.0]] * 4, dtype=DTYPE)
        )
        mass = fitted.certificate.unobserved_mass
        assert ((mass > 0) & (mass < 1)).all()
    # both starts reach the same loss (the minimum), with different unobserved mass
    torch.testing.assert_close(fits[0].loss, fits[1].loss, rtol=0, atol=1e-9)
    # the default start no longer leaves the responses pi0 gives 0 at probability 0 (that gave KL 207)
    assert (fits[0].policy.logp[..., 0] > -50).all()


def test_separable_data_at_beta_zero_has_no_finite_minimizer_and_says_where_it_diverges():
    # One prompt, three responses, every one compared: 0 ≻ 1 (3 times), 1 ≻ 2, 2 ≻ 1 and 0 ≻ 2.
    # Response 0 never loses: {1, 2} is strongly connected, {0} is above it; d = (0, −1, −1).
    counts = torch.zeros(1, 1, 3, 3, dtype=DTYPE)
    counts[0, 0, 0, 1] = 3
    counts[0, 0, 1, 2] = counts[0, 0, 2, 1] = counts[0, 0, 0, 2] = 1
    world = sa.World.from_tensors(target=[[0.5, 0.3, 0.2]], reference=[[1 / 3] * 3], gamma=0.5)
    data = sa.PreferenceData(counts=counts, world=world, n_pairs=6)
    fitted = sa.fit("pmle", data, max_iter=200)
    certificate = fitted.certificate
    assert fitted.status == ("no_finite_minimizer",)
    assert bool(certificate.certified.all()) and not bool(fitted.converged.any())
    torch.testing.assert_close(certificate.divergence[0, 0], torch.tensor([0.0, -1.0, -1.0], dtype=DTYPE))
    # along d the loss keeps falling: the fitted logits are far out, pi(0) ≈ 1, and 1, 2 stay tied
    probs = fitted.policy.probs[0, 0]
    assert probs[0] > 1 - 1e-8
    assert abs(math.log(probs[1] / probs[2])) < 1e-6  # 1 ≻ 2 once and 2 ≻ 1 once: equal
    theta = fitted.policy.logp
    further = sa.empirical_loss("pmle", data, torch.log_softmax(theta + 10 * certificate.divergence, -1))
    assert (further < fitted.loss).all()


def test_divergence_direction_hand_cases():
    counts = torch.zeros(2, 1, 4, 4, dtype=DTYPE)
    counts[0, 0, 0, 1] = counts[0, 0, 1, 2] = counts[0, 0, 2, 0] = 1  # a cycle and an unobserved response 3
    counts[1, 0, 0, 1] = counts[1, 0, 1, 2] = counts[1, 0, 2, 3] = 1  # a chain 0 ≻ 1 ≻ 2 ≻ 3
    d = divergence_direction(counts)
    assert d[0, 0].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert d[1, 0].tolist() == pytest.approx([0.0, -1 / 3, -2 / 3, -1.0])


def test_mass_move_gap_sees_a_starved_response_the_gradient_does_not():
    # F(pi) = KL(pi ‖ uniform) on 3 responses, at pi = (1/2, 1/2, e^-80)/Z: the logit gradient of
    # response 2 is pi_2 (ln(3 pi_2) − KL) ≈ e^-80 · (−79) ≈ 1e-33, below any tolerance; moving
    # t = 0.1 of the mass onto it lowers KL from ln 3 − ln 2 = 0.405 to about 0.23 (computed below).
    def values(theta):
        logp = torch.log_softmax(theta, -1)
        return (logp.exp() * (logp + math.log(3))).sum(-1)

    theta = torch.tensor([[0.0, 0.0, -80.0]], dtype=DTYPE)
    gap = mass_move_gap(values, theta)
    moved = torch.tensor([[0.45, 0.45, 0.1]], dtype=DTYPE)
    expected = values(theta) - (moved * (moved.log() + math.log(3))).sum(-1)
    assert gap.item() >= expected.item() > 0.1
    # at the minimizer (uniform) no move helps
    assert mass_move_gap(values, torch.zeros(1, 3, dtype=DTYPE)).item() <= 1e-15


def _objective_names():
    names = []
    for name in list_objectives():
        obj = get_objective(name)
        if all(value is not None or key in obj.example_params for key, value in obj.params.items()):
            names.append(name)
    return names


def _logit_problem(obj, beta, ridge):
    world = sa.World.random(3, 5, seed=1)
    data = world.sample_preferences(40, 2, seed=3)  # small n: some cells have count 0
    if obj.data == "pairs":
        data = sa.PairData(data.counts, 40, world)
    reward = world.true_reward if obj.needs_reward else None
    ctx = make_context(obj, world, reward, obj.resolve_params(dict(obj.example_params)))
    pair_weight, prompt_weight, total = data_weights(obj, data)
    return LogitObjective(obj, pair_weight, prompt_weight, total, ctx, beta, ridge)


@pytest.mark.parametrize("name", _objective_names())
@pytest.mark.parametrize(("beta", "ridge"), [(0.0, 0.0), (0.2, 0.0), (0.0, 0.3)])
def test_mass_moves_equal_the_objective_after_each_move(name, beta, ridge, monkeypatch):
    # `mass_moves` takes the change of the loss cell by cell; `best_mass_move` evaluates the whole
    # loss after each of the A moves of each size.  Blocks of a few cells (the block sizes patched) and
    # a candidate budget of one row test the block and chunk bookkeeping.
    monkeypatch.setattr(evaluate, "CELL_BLOCK", 7)
    monkeypatch.setattr(certificate, "_CANDIDATE_BUDGET", 1)
    problem = _logit_problem(get_objective(name), beta, ridge)
    generator = torch.Generator().manual_seed(4)
    theta = 2.0 * torch.randn(2, 3, 5, generator=generator, dtype=DTYPE)
    theta[0, 1, 2] = -60.0  # a starved response: its logit gradient is ~e^-60, its move is not
    gap, moved = certificate.mass_moves(problem, theta)
    want_gap, want_moved = certificate.best_mass_move(problem.values, theta)
    scale = 1.0 + problem.values(theta).abs()
    torch.testing.assert_close(gap, want_gap, rtol=0.0, atol=1e-12 * float(scale.max()))
    assert (gap > 1e-3).any()  # the moves do lower these objectives: the comparison is not of zeros
    clear = gap > 1e-6  # where the best move is not a near-tie, both choose it
    torch.testing.assert_close(moved[clear], want_moved[clear], rtol=0.0, atol=1e-9)


def test_mass_moves_gap_is_infinite_where_a_move_is_nan():
    problem = _logit_problem(get_objective("pmle"), 0.0, 0.0)
    theta = torch.zeros(2, 3, 5, dtype=DTYPE)
    original = problem.obj.fn

    def poisoned(logp_chosen, logp_rejected, **params):
        loss = original(logp_chosen, logp_rejected, **params)
        # NaN only where the chosen response is moved by t = 0.5: ln(0.5 · 0.2 + 0.5) = −0.51 > −1 > ln 0.2
        return torch.where(logp_chosen > -1.0, torch.full_like(loss, math.nan), loss)

    problem.obj = dataclasses.replace(problem.obj, fn=poisoned)
    gap, _ = certificate.mass_moves(problem, theta)
    assert torch.isinf(gap).all()


def test_component_labels_hand_cases():
    edges = torch.zeros(2, 4, 4, dtype=torch.bool)
    edges[0, 0, 1] = edges[0, 1, 0] = edges[0, 2, 3] = True  # {0, 1} a cycle, 2 → 3 one way
    edges[1] = True  # complete: one component without a search
    assert certificate.component_labels(edges, "strong").tolist() == [[0, 0, 2, 3], [0, 0, 0, 0]]
    assert certificate.component_labels(edges, "weak").tolist() == [[0, 0, 2, 2], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="connection"):
        certificate.component_labels(edges, "both")


def _depth_by_closure(counts):
    # the definition: d_a = −#{b: b reaches a, a does not reach b}, by dense closure, per prompt
    A = counts.shape[-1]
    reach = (counts > 0) | torch.eye(A, dtype=torch.bool)
    for _ in range(A):
        reach = (reach.to(DTYPE) @ reach.to(DTYPE)) > 0
    depth = (reach & ~reach.transpose(-1, -2)).sum(dim=-2).to(DTYPE)
    return -depth / depth.amax(dim=-1, keepdim=True).clamp_min(1.0)


@pytest.mark.parametrize("n_responses", [1, 2, 5, 9])
def test_divergence_direction_matches_the_closure(n_responses):
    generator = torch.Generator().manual_seed(n_responses)
    for density in (0.05, 0.2, 0.5, 1.0):
        counts = (torch.rand(6, 3, n_responses, n_responses, generator=generator) < density).to(DTYPE)
        assert torch.equal(divergence_direction(counts), _depth_by_closure(counts))


@pytest.mark.parametrize("objective", ["pmle", "ipo"])
def test_the_fit_reports_the_gap_of_the_policy_it_returns(objective):
    # The solver hands `certify` the gaps it computed when each problem stopped; they must be the
    # gaps at the returned policy, as the derivative-free definition computes them there.
    obj = get_objective(objective)
    problem = _logit_problem(obj, 0.2, 0.0)
    world = sa.World.random(3, 5, seed=1)
    fitted = sa.fit(objective, world.sample_preferences(40, 2, seed=3), beta=0.2)
    assert bool(fitted.certificate.certified.all()), fitted.status
    want = mass_move_gap(problem.values, fitted.policy.logp)
    torch.testing.assert_close(fitted.certificate.gap, want, rtol=0.0, atol=1e-12)


def _logistic_problem(name, world, data):
    obj = get_objective(name)
    reward = None
    if name == "distillation":  # R̂ = r* + noise, on the pairs without their labels
        noise = torch.randn(world.true_reward.shape, generator=torch.Generator().manual_seed(12), dtype=DTYPE)
        reward = world.true_reward + 0.5 * noise
        data = sa.PairData(data.counts, int(data.counts[0].sum()), world)
    ctx = make_context(obj, world, reward, obj.resolve_params({}))
    pair_weight, prompt_weight, total = data_weights(obj, data)
    return LogitObjective(obj, pair_weight, prompt_weight, total, ctx, 0.0, 0.0)


def _counted_logistic_path(monkeypatch):
    """Records whether each `mass_moves` call took the logistic kernel (True) or fell back (False)."""
    calls = []
    original = certificate._logistic_pair_decreases

    def counted(*args):
        result = original(*args)
        calls.append(result is not None)
        return result

    monkeypatch.setattr(certificate, "_logistic_pair_decreases", counted)
    return calls


@pytest.mark.parametrize("name", ["pmle", "reward_model", "dpo", "distillation"])
@pytest.mark.parametrize(("gamma", "starved"), [(1e-3, -60.0), (1.0, -60.0), (30.0, -5.0)])
def test_logistic_mass_moves_equal_the_cell_path(name, gamma, starved, monkeypatch):
    # PMLE, the reward model, DPO and distillation (on its soft counts) take their mass moves from
    # per-response scores (`logistic_mass_decreases`); the cell path re-evaluates the loss on the
    # moved tables.
    # Counts with zeros, a starved response, strips of a few rows (the budget patched).
    import synthalign._logistic_pairs as logistic_pairs

    monkeypatch.setattr(logistic_pairs, "MOVE_STRIP", 500)
    world = sa.World.random(3, 40, seed=5).replace(gamma=gamma)
    problem = _logistic_problem(name, world, world.sample_preferences(300, 2, seed=6))
    theta = 2.0 * torch.randn(2, 3, 40, generator=torch.Generator().manual_seed(7), dtype=DTYPE)
    theta[0, 1, 2] = starved
    calls = _counted_logistic_path(monkeypatch)
    gap, moved = certificate.mass_moves(problem, theta)
    assert calls == [True]
    monkeypatch.setattr(certificate, "_logistic_pair_decreases", lambda *args: None)
    want_gap, want_moved = certificate.mass_moves(problem, theta)
    scale = 1.0 + problem.values(theta).abs()
    torch.testing.assert_close(gap, want_gap, rtol=0.0, atol=1e-12 * float(scale.max()))
    assert (gap > 1e-5).any()  # the moves do lower the objective (by ~1e-4 at gamma 1e-3)
    clear = gap > 1e-6
    torch.testing.assert_close(moved[clear], want_moved[clear], rtol=0.0, atol=1e-9)


@pytest.mark.parametrize("case", ["zero_reference", "lift_beyond_range"])
def test_logistic_mass_moves_fall_back_to_the_cell_path(case, monkeypatch):
    # A DPO reference of probability zero (scores of −inf; the behavior policy never proposes that
    # response, so its cells have weight zero) or a move whose lift γ·Δ passes e^600 (γ = 30, a
    # response at mass e^-60): the kernel declines and the cell path answers.
    world = sa.World.random(3, 6, seed=8)
    if case == "zero_reference":
        policies = {}
        for field in ("reference", "behavior"):
            probs = getattr(world, field).probs.clone()
            probs[:, 0] = 0.0
            policies[field] = sa.Policy.from_probs(probs / probs.sum(dim=-1, keepdim=True))
        world = world.replace(**policies)
    else:
        world = world.replace(gamma=30.0)
    problem = _logistic_problem("dpo", world, world.sample_preferences(200, 2, seed=9))
    theta = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(10), dtype=DTYPE)
    theta[0, 1, 2] = -60.0
    calls = _counted_logistic_path(monkeypatch)
    gap, moved = certificate.mass_moves(problem, theta)
    assert calls == [False]
    want_gap, want_moved = certificate.best_mass_move(problem.values, theta)
    scale = 1.0 + problem.values(theta).abs()
    torch.testing.assert_close(gap, want_gap, rtol=0.0, atol=1e-12 * float(scale.max()))
    clear = gap > 1e-6
    torch.testing.assert_close(moved[clear], want_moved[clear], rtol=0.0, atol=1e-9)


@pytest.mark.parametrize("name", ["pmle", "distillation"])
def test_population_fit_certifies_through_the_logistic_kernel(name, monkeypatch):
    # The fit's stopping rule takes the kernel; with the cell path instead it stops at the same
    # iterate with the same certificate.
    world = sa.World.random(2, 70, seed=11)
    data = sa.population_pairs(world) if name == "distillation" else sa.population_preferences(world)
    calls = _counted_logistic_path(monkeypatch)
    fitted = sa.fit(name, data)
    assert calls and all(calls)
    monkeypatch.setattr(certificate, "_logistic_pair_decreases", lambda *args: None)
    cells = sa.fit(name, data)
    assert fitted.status == cells.status == ("optimal",)
    assert fitted.iterations == cells.iterations
    torch.testing.assert_close(fitted.policy.logp, cells.policy.logp, rtol=0.0, atol=1e-12)
    torch.testing.assert_close(fitted.certificate.gap, cells.certificate.gap, rtol=0.0, atol=1e-13)
