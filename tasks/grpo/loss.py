"""GRPO advantages and the clipped policy-gradient loss, as plain tensor functions.

Algorithm (one optimiser step, DeepSeekMath's GRPO with the usual choices spelled out):

    for each prompt q in the batch, sample G completions o_1..o_G from pi_old
    r_i      = sum_k w_k * reward_k(o_i)                          (verifiable rewards)
    A_i      = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)     (group baseline; std optional)
    ratio_t  = exp(logp_theta(o_i,t) - logp_old(o_i,t))            (per token)
    L_clip   = -min(ratio_t * A_i, clip(ratio_t, 1-eps_c, 1+eps_c) * A_i)
    L_kl     = beta * k3(pi_theta || pi_ref) per token,  k3 = exp(d) - d - 1,  d = logp_ref - logp_theta
    loss     = mean over sequences of (mean over that sequence's tokens of L_clip + L_kl)

- The std is the population std over the group (the group *is* the population), and eps = 1e-4
  keeps an all-equal group at advantage 0 instead of NaN: such a group teaches nothing.
- "Mean over each sequence's tokens, then over sequences" is GRPO's original normalisation;
  it weighs short and long completions equally per sequence.
- With one update per rollout batch, pi_old = pi_theta and the ratio is 1 at the point of the
  gradient, so the clip never binds; it matters when rollouts are reused.
"""

from __future__ import annotations

import torch

EPS = 1e-4


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True) -> torch.Tensor:
    """Advantages for rewards laid out group by group: [B] with B = n_prompts * group_size.

    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4).tolist()  # doctest: +ELLIPSIS
    [1.7317..., -0.5772..., -0.5772..., -0.5772...]
    """
    r = rewards.view(-1, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (r.std(dim=1, unbiased=False, keepdim=True) + EPS)
    # Float rounding leaves ~1e-8 residue in an all-equal group (e.g. eight 0.1s); after the
    # division that becomes noise of ~1e-4 with random signs. Such a group teaches nothing: zero it.
    flat = r.amax(dim=1, keepdim=True) == r.amin(dim=1, keepdim=True)
    return centred.masked_fill(flat, 0.0).reshape(-1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token unbiased, always non-negative KL estimate (Schulman's k3)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float = 0.2,
    beta: float = 0.0,
    ref_logp: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate (+ optional KL) with GRPO's per-sequence token mean. Shapes: [B, T], adv [B]."""
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv
    per_token = -torch.min(unclipped, clipped)
    kl = torch.zeros_like(per_token)
    if beta > 0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs reference log-probs (ref_logp)")
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + beta * kl
    lengths = mask.sum(1).clamp(min=1)
    loss = ((per_token * mask).sum(1) / lengths).mean()
    with torch.no_grad():
        n_tok = mask.sum().clamp(min=1)
        stats = {
            "kl": float((kl * mask).sum() / n_tok),
            "clip_frac": float((((ratio - 1).abs() > epsilon).to(mask.dtype) * mask).sum() / n_tok),
        }
    return loss, stats
