"""GRPO advantages, the k3 KL estimate, token entropy and every policy-loss option, on hand-worked numbers.

Every expected value below is derived in the comment beside it from the formulas in
``tasks/grpo/loss.py``'s docstring; tensors are float64 so the comparisons can be tight.
"""

import math

import pytest
import torch

from tasks.generation import token_entropy
from tasks.grpo.loss import EPS, group_advantages, k3_kl, policy_loss

F64 = torch.float64
LN2 = math.log(2)


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows if len(rows) > 1 else rows[0], dtype=F64)


# ----------------------------------------------------------------------------- advantages
def test_one_group_of_four_with_one_success():
    # mean = 1/4; deviations (.75, -.25, -.25, -.25); population variance
    # (.5625 + 3 * .0625) / 4 = 3/16, so std = sqrt(3)/4 = 0.4330...
    # A = dev / (sqrt(3)/4 + 1e-4): 0.75 / 0.43311 = 1.73165..., -0.25 / 0.43311 = -0.57722...
    std = math.sqrt(3) / 4
    expected = [0.75 / (std + EPS), -0.25 / (std + EPS), -0.25 / (std + EPS), -0.25 / (std + EPS)]
    got = group_advantages(t([1.0, 0.0, 0.0, 0.0]), 4)
    assert got.tolist() == pytest.approx(expected, abs=1e-12)
    assert got[0].item() == pytest.approx(math.sqrt(3), abs=1e-3)  # 3/sqrt(3) without the eps
    assert got.sum().item() == pytest.approx(0.0, abs=1e-12)  # centred within the group


def test_two_groups_are_normalised_separately():
    # group 1 as above; group 2 = (2, 2, 0, 0): mean 1, deviations (1, 1, -1, -1), std 1,
    # so A = +-1 / (1 + 1e-4). The first group must not see the second's rewards.
    std1 = math.sqrt(3) / 4
    expected = [0.75 / (std1 + EPS)] + [-0.25 / (std1 + EPS)] * 3 + [1 / (1 + EPS)] * 2 + [-1 / (1 + EPS)] * 2
    got = group_advantages(t([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0]), 4)
    assert got.tolist() == pytest.approx(expected, abs=1e-12)


def test_all_equal_group_gives_zero_not_nan():
    # deviations are all 0 and the std is 0: 0 / (0 + 1e-4) = 0 exactly, never 0/0.
    got = group_advantages(t([1.0, 1.0, 1.0, 1.0, 0.0, 1.0]), 3)
    assert not torch.isnan(got).any()
    assert got[:3].tolist() == [0.0, 0.0, 0.0]
    # the other group: mean 2/3, deviations (1/3, -2/3, 1/3), variance (1/9+4/9+1/9)/3 = 2/9
    s = math.sqrt(2 / 9)
    assert got[3:].tolist() == pytest.approx(
        [(1 / 3) / (s + EPS), (-2 / 3) / (s + EPS), (1 / 3) / (s + EPS)], abs=1e-12
    )


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("reward", [0.1, 0.7, 1.1])
def test_all_equal_group_of_an_inexact_reward_is_exactly_zero(reward, scale):
    # The trainer builds float32 rewards; 0.1 is "format only" and 1.1 "correct + format" with the
    # default weights. In float32 the mean of eight 0.1s is not exactly 0.1, so r - mean is ~7e-9;
    # torch's std still reports 0, and 7e-9 / (0 + 1e-4) leaves advantages of ~1e-4 with random
    # signs in a group that should teach nothing (the docstring promises advantage 0).
    got = group_advantages(torch.full((16,), reward, dtype=torch.float32), 8, scale)
    assert got.abs().max().item() == 0.0


def test_scale_none_only_centres():
    # Dr. GRPO: r - mean(r) with no division: (.75, -.25, -.25, -.25) and (1, 1, -1, -1)
    got = group_advantages(t([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0]), 4, "none")
    assert got.tolist() == [0.75, -0.25, -0.25, -0.25, 1.0, 1.0, -1.0, -1.0]


def test_scale_batch_centres_per_group_and_divides_by_the_batch_std():
    # Centred per group as above: (.75, -.25, -.25, -.25, 1, 1, -1, -1). The divisor is the
    # population std of all 8 rewards (1, 0, 0, 0, 2, 2, 0, 0): mean 5/8, E[r^2] = 9/8,
    # variance 9/8 - 25/64 = 47/64, std = sqrt(47)/8 = 0.85696... (not the groups' 0.433 and 1).
    s = math.sqrt(47) / 8
    dev = [0.75, -0.25, -0.25, -0.25, 1.0, 1.0, -1.0, -1.0]
    got = group_advantages(t([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0]), 4, "batch")
    assert got.tolist() == pytest.approx([d / (s + EPS) for d in dev], abs=1e-12)


def test_scale_batch_keeps_an_all_equal_group_at_zero():
    # groups (1, 1) and (0, 1); batch mean 3/4, variance 3/4 - 9/16 = 3/16, std sqrt(3)/4.
    # group 1 is flat -> (0, 0); group 2 centred (-1/2, 1/2) / (sqrt(3)/4 + EPS) = -+1.1544...
    s = math.sqrt(3) / 4
    got = group_advantages(t([1.0, 1.0, 0.0, 1.0]), 2, "batch")
    assert got.tolist() == pytest.approx([0.0, 0.0, -0.5 / (s + EPS), 0.5 / (s + EPS)], abs=1e-12)
    assert got[:2].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("bad", [True, False, "std", None])
def test_unknown_scale_is_refused(bad):
    # a bool from the old API would silently mean "group" (True) or be truthy ("none" is truthy too)
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(t([1.0, 0.0]), 2, bad)


def test_rewards_not_a_multiple_of_the_group_size_raise():
    with pytest.raises(RuntimeError):
        group_advantages(t([1.0, 0.0, 0.0, 0.0, 1.0]), 4)


# ----------------------------------------------------------------------------- k3 KL, entropy
def test_k3_on_chosen_log_ratios():
    # d = ref - logp; k3 = exp(d) - d - 1: d=0 -> 0; d=ln2 -> 2 - ln2 - 1 = 1 - ln2 = 0.30685;
    # d=-ln2 -> 1/2 + ln2 - 1 = ln2 - 1/2 = 0.19315; d=1 -> e - 2 = 0.71828
    logp = t([0.0, 0.0, 0.0, -1.0])
    ref = t([0.0, LN2, -LN2, 0.0])
    got = k3_kl(logp, ref).tolist()
    assert got == pytest.approx([0.0, 1 - LN2, LN2 - 0.5, math.e - 2], abs=1e-12)
    assert min(got) >= 0.0
    # outside ``valid`` the difference is zeroed before the exp: KL 0 there, and a finite gradient
    logp = t([0.0, -1e6]).requires_grad_(True)
    kl = k3_kl(logp, t([LN2, 0.0]), torch.tensor([True, False]))
    assert kl.tolist() == pytest.approx([1 - LN2, 0.0], abs=1e-12)
    kl.sum().backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[1] == 0


def test_token_entropy_hand_worked():
    # logits (0, ln3) -> p = (1/4, 3/4): H = -(1/4 ln 1/4 + 3/4 ln 3/4) = ln4 - (3/4) ln3 = 0.562335
    # uniform over 5 -> ln 5; adding -inf for a forbidden token changes nothing (p = 0 adds 0);
    # a shift by 1e4 changes nothing (log_softmax, not exp of raw logits);
    # (1000, 0): p2 = e^-1000 underflows to 0 -> H = 0 exactly, not NaN.
    h = 2 * LN2 - 0.75 * math.log(3)
    logits = t(
        [[0.0, math.log(3), -math.inf, -math.inf, -math.inf], [0.0] * 5],
        [[1e4, 1e4 + math.log(3), -math.inf, -math.inf, -math.inf], [1000.0, 0.0, 0.0, 0.0, 0.0]],
    )
    got = token_entropy(torch.log_softmax(logits, -1))
    assert got.shape == (2, 2)
    assert got[0].tolist() == pytest.approx([h, math.log(5)], abs=1e-12)
    assert got[1, 0].item() == pytest.approx(h, abs=1e-12)
    assert got[1, 1].item() == pytest.approx(0.0, abs=1e-12)


def test_token_entropy_gradient_is_finite_with_forbidden_tokens_and_bf16_is_upcast():
    logits = t([[[0.0, math.log(3), -math.inf]]]).requires_grad_(True)
    token_entropy(torch.log_softmax(logits, -1)).sum().backward()
    assert torch.isfinite(logits.grad).all()
    lp = torch.full((1, 1, 4), -2 * LN2, dtype=torch.bfloat16)  # uniform over 4, rounded to bf16
    x = float(lp[0, 0, 0])
    got = token_entropy(lp)  # summed in float32: exact to float32 precision for the bf16 inputs
    assert got.dtype == torch.float32 and got.item() == pytest.approx(-4 * math.exp(x) * x, abs=1e-6)


# ----------------------------------------------------------------------------- the 2x3 example
def _clip_example():
    """Two sequences, 3 token slots, masks of length 3 and 2 (the third slot of row 2 is padding).

    row 1: A = +1, ratios (1.0, 1.1, 1.5); row 2: A = -2, ratios (0.5, 1.5, 9.0[masked]).
    Per-token clipped loss, eps = 0.2 (range [0.8, 1.2]), -min(r A, clip(r) A):
      row 1: r=1.0 -> -1.0; r=1.1 -> -1.1; r=1.5 -> -min(1.5, 1.2) = -1.2 (clipped: no gradient)
      row 2: r=0.5 -> -min(-1.0, -1.6) = 1.6 (clipped: no gradient); r=1.5 -> -min(-3.0, -2.4) = 3.0
    Row sums -3.3 and 4.6, total 1.3 over 5 valid tokens.
    """
    old = t([-1.0, -2.0, -0.5], [-1.5, -0.3, -2.0])
    ratios = t([1.0, 1.1, 1.5], [0.5, 1.5, 9.0])
    logp = old + torch.log(ratios)
    adv = t([1.0, -2.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logp, old, adv, mask


# d(-r A)/d logp = -r A on unclipped valid tokens: row 1 (-1, -1.1, 0), row 2 (0, 3.0, 0); each loss
# type multiplies it by its weight: grpo 1/(|o_i| B), bnpo 1/5, dr_grpo 1/(B L), dapo 1/N.
RAW_GRAD = [[-1.0, -1.1, 0.0], [0.0, 3.0, 0.0]]
AGGREGATIONS = [
    # grpo: (-3.3/3 + 4.6/2) / 2 = (-1.1 + 2.3) / 2 = 0.6; weights 1/6 (row 1), 1/4 (row 2)
    ("grpo", {}, 0.6, [[1 / 6] * 3, [1 / 4] * 3]),
    # bnpo: 1.3 / 5 = 0.26
    ("bnpo", {}, 0.26, [[1 / 5] * 3] * 2),
    # dr_grpo with L = 4: 1.3 / (2 * 4) = 0.1625
    ("dr_grpo", {"max_completion_length": 4}, 0.1625, [[1 / 8] * 3] * 2),
    # dapo: default N = the 5 local tokens -> 0.26 (= bnpo); N = 5 given -> 0.26; N = 10 -> 0.13
    ("dapo", {}, 0.26, [[1 / 5] * 3] * 2),
    ("dapo", {"num_items_in_batch": 5}, 0.26, [[1 / 5] * 3] * 2),
    ("dapo", {"num_items_in_batch": 10}, 0.13, [[1 / 10] * 3] * 2),
]


@pytest.mark.parametrize(("loss_type", "extra", "value", "weights"), AGGREGATIONS)
def test_each_loss_type_value_and_gradient(loss_type, extra, value, weights):
    logp, old, adv, mask = _clip_example()
    logp = logp.clone().requires_grad_(True)
    loss, stats = policy_loss(logp, old, adv, mask, loss_type=loss_type, epsilon=0.2, **extra)
    assert loss.item() == pytest.approx(value, abs=1e-12)
    loss.backward()
    assert torch.allclose(logp.grad, t(*RAW_GRAD) * t(*weights), atol=1e-12)
    # the statistics do not depend on the aggregation
    assert stats["clip_frac_low"] == pytest.approx(1 / 5, abs=1e-12)


def test_clip_statistics_split_low_and_high():
    logp, old, adv, mask = _clip_example()
    loss, stats = policy_loss(logp, old, adv, mask, epsilon=0.2)
    # low: r < 0.8 with A < 0 -> row 2's 0.5 (1 token); high: r > 1.2 with A > 0 -> row 1's 1.5.
    # Row 2's 1.5 is outside the range too but with A < 0 the min takes the unclipped -3.0, so the
    # clip does not act on it (it gets a gradient): 2 of 5 valid tokens, not 3.
    assert stats["clip_frac_low"] == pytest.approx(0.2, abs=1e-12)
    assert stats["clip_frac_high"] == pytest.approx(0.2, abs=1e-12)
    assert stats["clip_frac"] == pytest.approx(0.4, abs=1e-12)
    # ratio_mean over valid tokens: (1 + 1.1 + 1.5 + 0.5 + 1.5) / 5 = 1.12 (the masked 9.0 ignored)
    assert stats["ratio_mean"] == pytest.approx(1.12, abs=1e-12)
    assert stats["kl"] == 0.0


def test_zero_advantage_tokens_are_never_counted_as_clipped():
    # ratios 0.5 and 1.5 are far outside [0.8, 1.2], but A = 0 makes both terms 0: nothing is cut
    logp = t([[math.log(0.5), math.log(1.5)]])
    _, stats = policy_loss(logp, torch.zeros_like(logp), t([0.0]), torch.ones(1, 2))
    assert stats["clip_frac"] == 0.0


# ----------------------------------------------------------------------------- clip-higher
def _one_token(ratio: float, adv: float):
    old = t([[-1.0]])
    return (old + math.log(ratio)).requires_grad_(True), old, t([adv]), torch.ones(1, 1)


def test_clip_higher_lets_a_ratio_of_1_25_through():
    # A = +1, r = 1.25. eps_high = 0.28: 1.25 < 1.28, loss -1.25, gradient -r A = -1.25.
    logp, old, adv, mask = _one_token(1.25, 1.0)
    loss, stats = policy_loss(logp, old, adv, mask, epsilon=0.2, epsilon_high=0.28)
    loss.backward()
    assert loss.item() == pytest.approx(-1.25, abs=1e-12)
    assert logp.grad.item() == pytest.approx(-1.25, abs=1e-12)
    assert stats["clip_frac_high"] == 0.0
    # eps_high = None means eps_high = eps = 0.2: 1.25 > 1.2, loss -1.2, gradient exactly 0
    logp, old, adv, mask = _one_token(1.25, 1.0)
    loss, stats = policy_loss(logp, old, adv, mask, epsilon=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(-1.2, abs=1e-12)
    assert logp.grad.item() == 0.0
    assert stats["clip_frac_high"] == 1.0


def test_clip_higher_leaves_the_lower_side_alone():
    # A = -1, r = 0.75 < 1 - 0.2: clipped at 0.8 whatever eps_high is: loss -min(-0.75, -0.8) = 0.8
    for eps_high in (None, 0.28):
        logp, old, adv, mask = _one_token(0.75, -1.0)
        loss, stats = policy_loss(logp, old, adv, mask, epsilon=0.2, epsilon_high=eps_high)
        loss.backward()
        assert loss.item() == pytest.approx(0.8, abs=1e-12)
        assert logp.grad.item() == 0.0
        assert stats["clip_frac_low"] == 1.0


# ----------------------------------------------------------------------------- sequence level (GSPO)
# On the 2x3 example: row 1 log-ratios (0, ln 1.1, ln 1.5) -> s_1 = (1 * 1.1 * 1.5)^(1/3) = 1.65^(1/3)
# = 1.18167...; row 2 (ln 0.5, ln 1.5) -> s_2 = 0.75^(1/2) = 0.86603... (the masked 9.0 is ignored).
S1, S2 = 1.65 ** (1 / 3), 0.75**0.5


def test_sequence_ratio_values_and_loss():
    logp, old, adv, mask = _clip_example()
    logp = logp.clone().requires_grad_(True)
    loss, stats = policy_loss(logp, old, adv, mask, importance_sampling_level="sequence", epsilon=0.2)
    # eps = 0.2: both s inside [0.8, 1.2], nothing clipped.
    # grpo: row 1 each token -s_1, mean -s_1; row 2 each token 2 s_2; loss (-s_1 + 2 s_2)/2 = 0.27519
    assert loss.item() == pytest.approx((-S1 + 2 * S2) / 2, abs=1e-12)
    # every valid token carries its sequence's ratio: (3 s_1 + 2 s_2) / 5 (token level gave 1.12)
    assert stats["ratio_mean"] == pytest.approx((3 * S1 + 2 * S2) / 5, abs=1e-12)
    assert stats["clip_frac"] == 0.0
    # GSPO-token gradient: -s_i A_i per token, times 1/(|o_i| B):
    # row 1: -s_1 / 6 on each token; row 2: 2 s_2 / 4 = s_2 / 2; padding 0
    loss.backward()
    assert torch.allclose(logp.grad, t([-S1 / 6] * 3, [S2 / 2, S2 / 2, 0.0]), atol=1e-12)


def test_sequence_level_clips_whole_sequences():
    logp, old, adv, mask = _clip_example()
    logp = logp.clone().requires_grad_(True)
    loss, stats = policy_loss(logp, old, adv, mask, importance_sampling_level="sequence", epsilon=0.1)
    # eps = 0.1 -> [0.9, 1.1]: s_1 = 1.18 > 1.1 with A > 0 -> all 3 tokens clipped high;
    # s_2 = 0.866 < 0.9 with A < 0 -> both tokens clipped low.
    # row 1: -min(1.18, 1.1) = -1.1; row 2: -min(-1.732, -1.8) = 1.8; loss (-1.1 + 1.8)/2 = 0.35
    assert loss.item() == pytest.approx(0.35, abs=1e-12)
    assert stats["clip_frac_high"] == pytest.approx(3 / 5, abs=1e-12)
    assert stats["clip_frac_low"] == pytest.approx(2 / 5, abs=1e-12)
    loss.backward()
    assert logp.grad.abs().max().item() == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_gspo_token_matches_the_sequence_objective_with_grpo_aggregation(seed):
    # GSPO (sequence): L = -1/B sum_i min(s_i A_i, clip(s_i) A_i), the gradient flowing through the
    # mean log-ratio inside s_i. GSPO-token with A_i,t = A_i and grpo aggregation has the same value
    # and the same gradient (paper, eq. 15-17); check on random data with some clipping.
    g = torch.Generator().manual_seed(seed)
    b, n = 4, 6
    old = -torch.rand(b, n, generator=g, dtype=F64) * 3
    logp = (old + torch.randn(b, n, generator=g, dtype=F64) * 0.3).requires_grad_(True)
    adv = torch.randn(b, generator=g, dtype=F64)
    mask = torch.ones(b, n)
    mask[0, 4:] = 0
    mask[2, 1:] = 0
    loss, _ = policy_loss(logp, old, adv, mask, importance_sampling_level="sequence", epsilon=0.1)
    (grad,) = torch.autograd.grad(loss, logp)

    s = torch.exp(((logp - old) * mask).sum(1) / mask.sum(1))
    ref = -torch.min(s * adv, torch.clamp(s, 0.9, 1.1) * adv).mean()
    (ref_grad,) = torch.autograd.grad(ref, logp)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-12)
    assert torch.allclose(grad, ref_grad, atol=1e-12)


# ----------------------------------------------------------------------------- gradients at ratio 1
def test_gradient_at_ratio_one_is_minus_advantage_over_length():
    # With old = logp.detach() the ratio is 1 and d loss / d logp_it = -A_i / len_i / n_seqs on
    # unmasked tokens: row 1 (A=1, len 3): -1/6; row 2 (A=-2, len 1): 2/1/2 = 1; padding: 0.
    logp = t([-1.0, -2.0, -0.5], [-1.5, -0.3, -2.0]).requires_grad_(True)
    adv = t([1.0, -2.0])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    loss, stats = policy_loss(logp, logp.detach(), adv, mask)
    # value: row 1 mean(-1) = -1, row 2 mean(2) = 2 -> (−1 + 2)/2 = 0.5
    assert loss.item() == pytest.approx(0.5, abs=1e-12)
    assert stats["clip_frac"] == 0.0
    assert stats["ratio_mean"] == 1.0
    loss.backward()
    assert torch.allclose(logp.grad, t([-1 / 6, -1 / 6, -1 / 6], [1.0, 0.0, 0.0]), atol=1e-12)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("seed", range(5))
def test_property_grpo_gradient_at_ratio_one(seed, level):
    # For any shapes, masks and advantages: at ratio 1 (token or sequence level) the grpo gradient
    # is -A_i / (|o_i| * B) on valid tokens and 0 elsewhere (B counts every row, see the docstring).
    g = torch.Generator().manual_seed(seed)
    b, n = int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(1, 8, (1,), generator=g))
    logp = (-torch.rand(b, n, generator=g, dtype=F64) * 4).requires_grad_(True)
    adv = torch.randn(b, generator=g, dtype=F64)
    mask = (torch.rand(b, n, generator=g) < 0.7).long()
    loss, _ = policy_loss(logp, logp.detach(), adv, mask, importance_sampling_level=level)
    loss.backward()
    expected = -adv[:, None] / (mask.sum(1, keepdim=True).clamp(min=1) * b) * mask
    assert torch.allclose(logp.grad, expected, atol=1e-12)


# ----------------------------------------------------------------------------- mu = 2 rollout reuse
def test_second_update_on_reused_rollouts_clips_a_token_that_moved_enough():
    # A two-token vocabulary per row, one sampled token (index 0) per row, theta = logits [2, 2].
    # p = pi(token 0) = sigmoid(theta_0 - theta_1); d log p / d theta = (1 - p, -(1 - p)).
    # Update 1 (theta = 0, p = 1/2, ratio 1, A = (1, -0.1)): dL/d theta_i = -A_i / 2 * (1/2, -1/2),
    # SGD lr 1 -> theta_1 = (0.25, -0.25) and theta_2 = (-0.025, 0.025).
    # Update 2 against the *stored* old log-probs ln 1/2:
    #   row 1: p = sigmoid(0.5) = 0.62246, ratio 1.24492 > 1.2 with A > 0 -> clipped, gradient 0
    #   row 2: p = sigmoid(-0.05) = 0.48750, ratio 0.97501 inside -> gradient -A_2/2 * r (1-p, -(1-p))
    #   loss = (-1.2 + 0.1 r_2) / 2
    theta = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    opt = torch.optim.SGD([theta], lr=1.0)
    adv, mask = t([1.0, -0.1]), torch.ones(2, 1)

    def logp() -> torch.Tensor:
        return torch.log_softmax(theta, dim=-1)[:, :1]

    old = logp().detach()  # computed once from the rollout policy, stored
    loss, stats = policy_loss(logp(), old, adv, mask, epsilon=0.2)
    assert stats["ratio_mean"] == 1.0 and stats["clip_frac"] == 0.0
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert theta.flatten().tolist() == pytest.approx([0.25, -0.25, -0.025, 0.025], abs=1e-12)

    loss, stats = policy_loss(logp(), old, adv, mask, epsilon=0.2)
    p1, p2 = 1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(0.05))
    r1, r2 = 2 * p1, 2 * p2
    assert r1 > 1.2 and 0.8 < r2 < 1.2
    assert loss.item() == pytest.approx((-1.2 + 0.1 * r2) / 2, abs=1e-12)
    assert stats["clip_frac_high"] == 0.5 and stats["clip_frac"] == 0.5
    assert stats["ratio_mean"] == pytest.approx((r1 + r2) / 2, abs=1e-12)
    opt.zero_grad()
    loss.backward()
    assert theta.grad[0].tolist() == [0.0, 0.0]
    assert theta.grad[1].tolist() == pytest.approx([0.05 * r2 * (1 - p2), -0.05 * r2 * (1 - p2)], abs=1e-12)


# ----------------------------------------------------------------------------- bnpo vs dapo
def test_dapo_sums_to_the_global_token_mean_under_grad_accumulation_bnpo_does_not():
    # Ratio 1, so the per-token loss is -A. Micro-batch 1: one row, A = 1, 3 tokens (sum -3);
    # micro-batch 2: one row, A = -2, 1 token (sum 2). The step's token mean is (-3 + 2)/4 = -0.25.
    # dapo with N = 4: -3/4 + 2/4 = -0.25 (summed). bnpo averaged: (-3/3 + 2/1)/2 = 0.5.
    logp = t([[-1.0, -2.0, -0.5]])
    micro = [(t([1.0]), torch.tensor([[1, 1, 1]])), (t([-2.0]), torch.tensor([[1, 0, 0]]))]
    dapo = [policy_loss(logp, logp, a, m, loss_type="dapo", num_items_in_batch=4)[0].item() for a, m in micro]
    bnpo = [policy_loss(logp, logp, a, m, loss_type="bnpo")[0].item() for a, m in micro]
    assert sum(dapo) == pytest.approx(-0.25, abs=1e-12)
    assert sum(bnpo) / 2 == pytest.approx(0.5, abs=1e-12)
    # with a single micro-batch holding both rows they agree: 4 tokens, -0.25
    both = dict(advantages=t([1.0, -2.0]), mask=torch.tensor([[1, 1, 1], [1, 0, 0]]))
    two = logp.expand(2, 3)
    for kind in ("dapo", "bnpo"):
        assert policy_loss(two, two, **both, loss_type=kind)[0].item() == pytest.approx(-0.25, abs=1e-12)


# ----------------------------------------------------------------------------- KL
def test_kl_term_with_beta():
    # ratio 1 and A = 0, so the surrogate is 0 and only beta * k3 remains.
    # row 1 (all 3 tokens): d = (0, ln2, -ln2) -> k3 = (0, 1 - ln2, ln2 - 1/2), token mean 0.5/3 = 1/6
    # row 2 (1 token):      d = ln2 -> k3 = 1 - ln2
    # loss = beta * mean(1/6, 1 - ln2) = 0.5 * (1/6 + 1 - ln2) / 2
    # stats["kl"] is the mean over the 4 unmasked tokens: (0.5 + 1 - ln2) / 4
    logp = t([-1.0, -2.0, -0.5], [-1.5, -0.3, -2.0])
    ref = logp + t([0.0, LN2, -LN2], [LN2, 5.0, 5.0])  # masked slots carry a large, ignored d
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    loss, stats = policy_loss(logp, logp, t([0.0, 0.0]), mask, beta=0.5, ref_logp=ref)
    assert loss.item() == pytest.approx(0.5 * (1 / 6 + 1 - LN2) / 2, abs=1e-12)
    assert stats["kl"] == pytest.approx((1.5 - LN2) / 4, abs=1e-12)
    # bnpo: beta * (sum of k3) / 4 = 0.5 * (1.5 - ln2) / 4
    loss, _ = policy_loss(logp, logp, t([0.0, 0.0]), mask, beta=0.5, ref_logp=ref, loss_type="bnpo")
    assert loss.item() == pytest.approx(0.5 * (1.5 - LN2) / 4, abs=1e-12)
    # beta = 0 with a reference: the KL is reported for monitoring but adds nothing to the loss
    loss, stats = policy_loss(logp, logp, t([0.0, 0.0]), mask, beta=0.0, ref_logp=ref)
    assert loss.item() == 0.0 and stats["kl"] == pytest.approx((1.5 - LN2) / 4, abs=1e-12)


def test_kl_and_surrogate_add():
    # The clip example (loss 0.6) plus beta=0.1 times k3 of d = 1 on every token (e - 2 each):
    # each row's token mean of k3 is e - 2, so the loss grows by 0.1 * (e - 2).
    logp, old, adv, mask = _clip_example()
    loss, stats = policy_loss(logp, old, adv, mask, beta=0.1, ref_logp=logp + 1.0)
    assert loss.item() == pytest.approx(0.6 + 0.1 * (math.e - 2), abs=1e-12)
    assert stats["kl"] == pytest.approx(math.e - 2, abs=1e-12)


# ----------------------------------------------------------------------------- bad input
def test_beta_without_reference_is_refused():
    logp, old, adv, mask = _clip_example()
    with pytest.raises(ValueError, match="reference"):
        policy_loss(logp, old, adv, mask, beta=0.1)


def test_dr_grpo_needs_a_max_completion_length_at_least_the_width():
    logp, old, adv, mask = _clip_example()
    with pytest.raises(ValueError, match="max_completion_length"):
        policy_loss(logp, old, adv, mask, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="max_completion_length=2"):  # 3 token slots > 2
        policy_loss(logp, old, adv, mask, loss_type="dr_grpo", max_completion_length=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss_type": "seq_mean"}, "loss_type"),
        ({"importance_sampling_level": "sentence"}, "importance_sampling_level"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"loss_type": "dapo", "num_items_in_batch": -1}, "num_items_in_batch"),
    ],
)
def test_bad_options_are_named(kwargs, match):
    logp, old, adv, mask = _clip_example()
    with pytest.raises(ValueError, match=match):
        policy_loss(logp, old, adv, mask, **kwargs)


def test_shape_mismatches_are_named():
    logp, old, adv, mask = _clip_example()
    with pytest.raises(ValueError, match="mask"):
        policy_loss(logp, old, adv, mask[:, :2])
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logp, old, t([1.0, 2.0, 3.0]), mask)
    with pytest.raises(ValueError, match="old_logp"):
        policy_loss(logp, old[:1], adv, mask)


# ----------------------------------------------------------------------------- empty rows
def test_empty_mask_row_contributes_zero_and_counts_in_grpo_b():
    # a row with no completion tokens: its length is clamped to 1 and its sum is 0; it still counts
    # in B (the weight of the other sequences stays 1/B): row 1 mean(-1, -1) = -1, row 2: 0 -> -0.5
    logp = t([-1.0, -2.0], [-1.0, -1.0])
    loss, _ = policy_loss(logp, logp.detach(), t([1.0, 3.0]), torch.tensor([[1, 1], [0, 0]]))
    assert loss.item() == pytest.approx(-0.5, abs=1e-12)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_fully_masked_rows_never_make_nan(loss_type, level):
    # Row 2 is a dropped (truncated) completion whose slots hold garbage: log-ratio 1000 and a
    # reference 1000 nats away (exp would overflow to inf, and inf * 0 = NaN if masked after the exp).
    # Row 1: A = 1, ratio 1, two tokens -> per-token loss -1, sum -2; row 2 adds exactly 0:
    # grpo (-1 + 0)/2 = -0.5; bnpo -2/2 = -1; dr_grpo -2/(2*2) = -0.5; dapo (local N = 2) -1.
    expected = {"grpo": -0.5, "bnpo": -1.0, "dr_grpo": -0.5, "dapo": -1.0}[loss_type]
    old = t([-1.0, -2.0], [-1.0, -1.0])
    logp = (old + t([0.0, 0.0], [1000.0, 1000.0])).requires_grad_(True)
    ref = old + t([0.0, 0.0], [-1000.0, 1000.0])
    mask = torch.tensor([[1, 1], [0, 0]])
    kw = dict(
        loss_type=loss_type, importance_sampling_level=level, beta=0.1, ref_logp=ref, max_completion_length=2
    )
    loss, stats = policy_loss(logp, old, t([1.0, 3.0]), mask, **kw)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert all(math.isfinite(v) for v in stats.values()) and stats["kl"] == 0.0
    loss.backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[1].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_an_all_masked_batch_gives_zero_loss_that_still_backpropagates(loss_type):
    logp = t([[-1.0, -2.0]]).requires_grad_(True)
    kw = dict(loss_type=loss_type, max_completion_length=2, num_items_in_batch=0)
    loss, stats = policy_loss(logp, logp.detach(), t([1.0]), torch.zeros(1, 2), **kw)
    assert loss.item() == 0.0 and stats["ratio_mean"] == 0.0
    loss.backward()
    assert logp.grad.tolist() == [[0.0, 0.0]]


def test_docstring_examples():
    import doctest

    import tasks.grpo.loss

    failed, attempted = doctest.testmod(tasks.grpo.loss, optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failed == 0
