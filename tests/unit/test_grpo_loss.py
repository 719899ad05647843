"""GRPO advantages, the k3 KL estimate and the clipped policy loss, against hand-worked numbers.

Every expected value below is derived in the comment beside it from the formulas in
``tasks/grpo/loss.py``'s docstring; tensors are float64 so the comparisons can be tight.
"""

import math

import pytest
import torch

from tasks.grpo.loss import EPS, group_advantages, k3_kl, policy_loss

F64 = torch.float64


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
    assert got[3:].tolist() == pytest.approx([(1 / 3) / (s + EPS), (-2 / 3) / (s + EPS), (1 / 3) / (s + EPS)], abs=1e-12)


@pytest.mark.parametrize("reward", [0.1, 0.7, 1.1])
def test_all_equal_group_of_an_inexact_reward_is_exactly_zero(reward):
    # The trainer builds float32 rewards; 0.1 is "format only" and 1.1 "correct + format" with the
    # default weights. In float32 the mean of eight 0.1s is not exactly 0.1, so r - mean is ~7e-9;
    # torch's std still reports 0, and 7e-9 / (0 + 1e-4) leaves advantages of ~1e-4 with random
    # signs in a group that should teach nothing (the docstring promises advantage 0).
    got = group_advantages(torch.full((16,), reward, dtype=torch.float32), 8)
    assert got.abs().max().item() == 0.0


def test_scale_false_only_centres():
    # Dr. GRPO-style: r - mean(r) with no division: (.75, -.25, -.25, -.25) and (1, 1, -1, -1)
    got = group_advantages(t([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0]), 4, scale=False)
    assert got.tolist() == [0.75, -0.25, -0.25, -0.25, 1.0, 1.0, -1.0, -1.0]


def test_rewards_not_a_multiple_of_the_group_size_raise():
    with pytest.raises(RuntimeError):
        group_advantages(t([1.0, 0.0, 0.0, 0.0, 1.0]), 4)


# ----------------------------------------------------------------------------- k3 KL
def test_k3_on_chosen_log_ratios():
    # d = ref - logp; k3 = exp(d) - d - 1: d=0 -> 0; d=ln2 -> 2 - ln2 - 1 = 1 - ln2 = 0.30685;
    # d=-ln2 -> 1/2 + ln2 - 1 = ln2 - 1/2 = 0.19315; d=1 -> e - 2 = 0.71828
    logp = t([0.0, 0.0, 0.0, -1.0])
    ref = t([0.0, math.log(2), -math.log(2), 0.0])
    got = k3_kl(logp, ref).tolist()
    assert got == pytest.approx([0.0, 1 - math.log(2), math.log(2) - 0.5, math.e - 2], abs=1e-12)
    assert min(got) >= 0.0


# ----------------------------------------------------------------------------- policy loss
def _clip_example():
    """Two sequences, 3 token slots, masks of length 3 and 2 (the third slot of row 2 is padding).

    row 1: A = +1, ratios (1.0, 1.1, 1.5); row 2: A = -2, ratios (0.5, 1.5, 9.0[masked]).
    """
    old = t([-1.0, -2.0, -0.5], [-1.5, -0.3, -2.0])
    ratios = t([1.0, 1.1, 1.5], [0.5, 1.5, 9.0])
    logp = old + torch.log(ratios)
    adv = t([1.0, -2.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logp, old, adv, mask


def test_policy_loss_hand_worked_with_clipping():
    logp, old, adv, mask = _clip_example()
    # per token: -min(r * A, clip(r, 0.8, 1.2) * A)
    # row 1 (A=+1): r=1.0 -> 1.0; r=1.1 -> 1.1 (inside the range); r=1.5 -> min(1.5, 1.2) = 1.2
    #   (the clip binds for a positive advantage above 1+eps); token mean = -(1 + 1.1 + 1.2)/3 = -1.1
    # row 2 (A=-2): r=0.5 -> min(-1.0, 0.8 * -2 = -1.6) = -1.6, loss 1.6 (the clip binds for a
    #   negative advantage below 1-eps); r=1.5 -> min(-3.0, -2.4) = -3.0, loss 3.0 (unclipped: the
    #   pessimistic side); the masked ratio 9.0 is ignored; token mean over 2 = 4.6/2 = 2.3
    # loss = mean over sequences = (-1.1 + 2.3) / 2 = 0.6
    loss, stats = policy_loss(logp, old, adv, mask, epsilon=0.2)
    assert loss.item() == pytest.approx(0.6, abs=1e-12)
    # clip_frac: |r - 1| > 0.2 on unmasked tokens: row 1 {1.5}, row 2 {0.5, 1.5} -> 3 of 5 tokens
    assert stats["clip_frac"] == pytest.approx(0.6, abs=1e-12)
    assert stats["kl"] == 0.0


def test_clipped_tokens_get_no_gradient():
    logp, old, adv, mask = _clip_example()
    logp = logp.clone().requires_grad_(True)
    loss, _ = policy_loss(logp, old, adv, mask, epsilon=0.2)
    loss.backward()
    g = logp.grad
    # d(-r*A)/d logp = -r*A (r = exp(logp - old)); scaled by 1/len_i and 1/n_seqs = 1/2.
    # row 1: r=1 -> -1/3/2; r=1.1 -> -1.1/3/2; r=1.5 clipped -> 0
    # row 2: r=0.5 clipped -> 0; r=1.5 -> +1.5*2/2/2 = 0.75; masked -> 0
    expected = t([-1 / 6, -1.1 / 6, 0.0], [0.0, 0.75, 0.0])
    assert torch.allclose(g, expected, atol=1e-12)


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
    loss.backward()
    assert torch.allclose(logp.grad, t([-1 / 6, -1 / 6, -1 / 6], [1.0, 0.0, 0.0]), atol=1e-12)


def test_kl_term_with_beta():
    # ratio 1 and A = 0, so the surrogate is 0 and only beta * k3 remains.
    # row 1 (all 3 tokens): d = (0, ln2, -ln2) -> k3 = (0, 1 - ln2, ln2 - 1/2), token mean 0.5/3 = 1/6
    # row 2 (1 token):      d = ln2 -> k3 = 1 - ln2
    # loss = beta * mean(1/6, 1 - ln2) = 0.5 * (1/6 + 1 - ln2) / 2
    # stats["kl"] is the mean over the 4 unmasked tokens: (0.5 + 1 - ln2) / 4
    ln2 = math.log(2)
    logp = t([-1.0, -2.0, -0.5], [-1.5, -0.3, -2.0])
    ref = logp + t([0.0, ln2, -ln2], [ln2, 5.0, 5.0])  # masked slots carry a large, ignored d
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    loss, stats = policy_loss(logp, logp, t([0.0, 0.0]), mask, beta=0.5, ref_logp=ref)
    assert loss.item() == pytest.approx(0.5 * (1 / 6 + 1 - ln2) / 2, abs=1e-12)
    assert stats["kl"] == pytest.approx((1.5 - ln2) / 4, abs=1e-12)


def test_kl_and_surrogate_add():
    # The clip example (loss 0.6) plus beta=0.1 times k3 of d = 1 on every token (e - 2 each):
    # each row's token mean of k3 is e - 2, so the loss grows by 0.1 * (e - 2).
    logp, old, adv, mask = _clip_example()
    loss, stats = policy_loss(logp, old, adv, mask, beta=0.1, ref_logp=logp + 1.0)
    assert loss.item() == pytest.approx(0.6 + 0.1 * (math.e - 2), abs=1e-12)
    assert stats["kl"] == pytest.approx(math.e - 2, abs=1e-12)


def test_beta_without_reference_is_refused():
    logp, old, adv, mask = _clip_example()
    with pytest.raises((AssertionError, ValueError), match="reference"):
        policy_loss(logp, old, adv, mask, beta=0.1)


def test_empty_mask_row_contributes_zero_not_nan():
    # a row with no completion tokens: its length is clamped to 1 and its sum is 0
    logp = t([-1.0, -2.0], [-1.0, -1.0])
    loss, _ = policy_loss(logp, logp.detach(), t([1.0, 3.0]), torch.tensor([[1, 1], [0, 0]]))
    # row 1: mean(-1, -1) = -1; row 2: 0 -> loss = -0.5
    assert loss.item() == pytest.approx(-0.5, abs=1e-12)
