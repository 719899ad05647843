"""GRPO advantages and the clipped policy-gradient losses, as plain tensor functions.

Algorithm (one optimiser step; the names on the right are ``GRPOConfig`` fields):

    sample     for each prompt q: G completions o_1..o_G ~ pi_old(. | q)              group_size
    reward     r_i = sum_k w_k * reward_k(o_i)                                         rewards
    advantage  A_i = (r_i - mean_{j in group(i)} r_j) / (S + EPS)                     scale_rewards
                 "group": S = std of the group's rewards         (GRPO, DeepSeekMath)
                 "batch": S = std of all B rewards of the batch  (group mean, batch std: Lite PPO)
                 "none":  no division at all                     (Dr. GRPO: the std is a bias)
    old        logp_old = log pi_old(o_i,t) once, from the policy that sampled the rollouts
    repeat mu = num_iterations times over the same rollouts:
      ratio    "token":    w_i,t = exp(logp_i,t - logp_old_i,t)                     importance_
               "sequence": s_i   = exp( 1/|o_i| * sum_t (logp_i,t - logp_old_i,t) )   sampling_level
                           w_i,t = sg[s_i] * exp(logp_i,t - sg[logp_i,t])      (GSPO-token, Zheng
                           et al. 2025, eq. 13-14: its value is s_i on every token, its gradient
                           is s_i * grad logp_i,t, so with A_i,t = A_i and "grpo" aggregation it is
                           GSPO's sequence objective exactly, value and gradient)
      clip     l_i,t = -min(w_i,t * A_i, clip(w_i,t, 1 - eps, 1 + eps_high) * A_i)   epsilon,
               eps_high > eps is DAPO's clip-higher: low-probability tokens may grow more    epsilon_high
      KL       l_i,t += beta * k3_i,t,   k3 = exp(d) - d - 1,  d = logp_ref - logp        beta
      aggregate with m_i,t the mask, |o_i| = sum_t m_i,t, B the rows of this call:    loss_type
        grpo     L = 1/B * sum_i ( sum_t m_i,t l_i,t / max(|o_i|, 1) )
        bnpo     L = sum_i,t m_i,t l_i,t / sum_i,t m_i,t                  (this micro-batch)
        dr_grpo  L = sum_i,t m_i,t l_i,t / (B * max_completion_length)
        dapo     L = sum_i,t m_i,t l_i,t / N,  N = valid tokens of the *whole* optimiser step
      one optimiser step on L

Choices, and why:
- Std is the population std (the group, or the batch, *is* the population). EPS = 1e-4 keeps an
  all-equal group finite, and such a group is set to exactly 0: it teaches nothing.
- mu iterations: on the first update pi_theta = pi_old, every ratio is 1 and the clip cannot bind;
  on updates 2..mu the stored logp_old stays while the policy moves, the ratio leaves 1 and the
  clip stops tokens that have already moved far enough (their gradient is exactly 0).
- grpo weighs every sequence equally (a long completion's tokens each count less: a length bias);
  bnpo/dapo weigh every token equally; dr_grpo divides by a constant so that neither the
  completion's length nor the batch's token count rescales the gradient.
- bnpo vs dapo: both are token means, and they are identical with one micro-batch. Under gradient
  accumulation bnpo normalises each micro-batch by its own token count (the caller then averages the
  micro-batch losses, dividing by the number of micro-batches, which under dynamic sampling can
  differ from grad_accum), so tokens of a micro-batch with few tokens weigh more; dapo divides by
  the step's global token count N (``num_items_in_batch``, summed over every micro-batch before the
  first backward), so the micro-batch losses are *summed* (no division by grad_accum) and equal the
  token mean of the whole step. grpo and dr_grpo, like bnpo, return micro-batch means that the
  caller averages.
- A row whose mask is all zero (a truncated completion dropped by ``mask_truncated``) adds 0 to
  every aggregation and never a NaN. For grpo it still counts in B: the weight of every other
  sequence stays 1/B whatever the truncation rate (dropping a completion removes its gradient and
  rescales nothing else), and averaging equal micro-batches gives exactly the full-batch loss.
- Masked slots get log-ratio 0 and KL 0 *before* the exp, so garbage there (padding) can never turn
  into inf * 0 = NaN in the loss or its gradient. old_logp and ref_logp are detached: constants.
- Clip statistics (fractions of valid tokens): clip_frac_low = ratio < 1 - eps with A < 0,
  clip_frac_high = ratio > 1 + eps_high with A > 0. These are exactly the tokens where the min picks
  the clipped term and it differs from the unclipped one, i.e. whose gradient the clip cuts;
  clip_frac = low + high.
"""

from __future__ import annotations

from typing import Literal

import torch

EPS = 1e-4
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALES = ("group", "batch", "none")
IS_LEVELS = ("token", "sequence")


# ----------------------------------------------------------------------------- advantages
def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: Literal["group", "batch", "none"] = "group"
) -> torch.Tensor:
    """Advantages for rewards laid out group by group: [B] with B = n_prompts * group_size.

    Centred on each group's mean; divided by the group's population std + EPS ("group"), by the
    population std of all B rewards + EPS ("batch"), or not at all ("none").

    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4).tolist()  # doctest: +ELLIPSIS
    [1.7316..., -0.5772..., -0.5772..., -0.5772...]
    """
    if not isinstance(scale, str) or scale not in SCALES:
        raise ValueError(f"scale_rewards must be one of {SCALES}, got {scale!r}")
    r = rewards.view(-1, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    if scale == "group":
        centred = centred / (r.std(dim=1, unbiased=False, keepdim=True) + EPS)
    elif scale == "batch":
        centred = centred / (r.std(unbiased=False) + EPS)
    # Float rounding leaves ~1e-8 residue in an all-equal group (e.g. eight 0.1s); after the
    # division that becomes noise of ~1e-4 with random signs. Such a group teaches nothing: zero it.
    flat = r.amax(dim=1, keepdim=True) == r.amin(dim=1, keepdim=True)
    return centred.masked_fill(flat, 0.0).reshape(-1)


# ----------------------------------------------------------------------------- per-token pieces
def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token unbiased, always non-negative KL estimate (Schulman's k3): exp(d) - d - 1 with
    d = ref_logp - logp. Slots outside ``valid`` get d = 0 (so KL 0) *before* the exp: padding
    garbage never becomes inf, and never inf * 0 = NaN in the gradient."""
    d = ref_logp - logp
    if valid is not None:
        d = d.masked_fill(~valid, 0.0)
    return torch.exp(d) - d - 1


def _importance_ratio(
    log_ratio: torch.Tensor, logp: torch.Tensor, valid: torch.Tensor, level: str
) -> torch.Tensor:
    """w_i,t of the docstring; ``log_ratio`` is already 0 on masked slots."""
    if level == "token":
        return torch.exp(log_ratio)
    lengths = valid.sum(1, keepdim=True).clamp(min=1).to(log_ratio.dtype)
    log_s = log_ratio.sum(1, keepdim=True) / lengths  # an all-masked row: log s = 0, s = 1
    # GSPO-token: value sg[s_i] everywhere, gradient s_i * d logp_t per token.
    grad_path = (logp - logp.detach()).masked_fill(~valid, 0.0)  # 0 in value; NaN-safe on padding
    return torch.exp(log_s.detach() + grad_path)


# ----------------------------------------------------------------------------- the loss
def _check(logp, old_logp, advantages, mask, ref_logp, loss_type, level) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if level not in IS_LEVELS:
        raise ValueError(f"importance_sampling_level must be one of {IS_LEVELS}, got {level!r}")
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
    named = {"old_logp": old_logp, "mask": mask} | ({"ref_logp": ref_logp} if ref_logp is not None else {})
    for name, x in named.items():
        if x.shape != logp.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, logp has {tuple(logp.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be [B] = [{logp.shape[0]}], got shape {tuple(advantages.shape)}")


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "grpo",
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    importance_sampling_level: Literal["token", "sequence"] = "token",
    beta: float = 0.0,
    ref_logp: torch.Tensor | None = None,
    max_completion_length: int | None = None,
    num_items_in_batch: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate (+ beta * k3 KL), aggregated by ``loss_type``; see the module docstring.

    Shapes: logp, old_logp, ref_logp, mask [B, T] (mask: completion tokens that count), advantages
    [B]. ``max_completion_length`` is required by dr_grpo; ``num_items_in_batch`` is dapo's global
    token count (default: this call's valid tokens, i.e. bnpo). Returns (loss, stats) with stats
    ``kl``, ``clip_frac``, ``clip_frac_low``, ``clip_frac_high``, ``ratio_mean`` (means over valid
    tokens; ``kl`` is 0 without ref_logp).
    """
    _check(logp, old_logp, advantages, mask, ref_logp, loss_type, importance_sampling_level)
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs reference log-probs (ref_logp)")
    eps_low = epsilon
    eps_high = epsilon if epsilon_high is None else epsilon_high
    if not (0 < eps_low < 1 and eps_high > 0):
        raise ValueError(f"need 0 < epsilon < 1 and epsilon_high > 0, got {eps_low} and {eps_high}")

    valid = mask != 0
    log_ratio = (logp - old_logp.detach()).masked_fill(~valid, 0.0)
    ratio = _importance_ratio(log_ratio, logp, valid, importance_sampling_level)
    adv = advantages.to(logp.dtype)[:, None]
    # the clipped surrogate: l = -min(w A, clip(w, 1 - eps, 1 + eps_high) A), plus beta * k3
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)
    kl = k3_kl(logp, ref_logp.detach(), valid) if ref_logp is not None else None
    if beta > 0 and kl is not None:  # beta > 0 without ref_logp was refused above
        per_token = per_token + beta * kl
    loss = aggregate(per_token, valid, loss_type, max_completion_length, num_items_in_batch)
    return loss, _token_stats(ratio, adv, valid, kl, eps_low, eps_high)


def aggregate(
    per_token: torch.Tensor,
    valid: torch.Tensor,
    loss_type: str,
    max_completion_length: int | None = None,
    num_items_in_batch: float | None = None,
) -> torch.Tensor:
    """The ``loss_type`` aggregation of per-token losses over the valid slots (module docstring)."""
    m = valid.to(per_token.dtype)
    total = (per_token * m).sum()
    n_valid = m.sum()
    if loss_type == "grpo":
        return ((per_token * m).sum(1) / m.sum(1).clamp(min=1)).mean()
    if loss_type == "bnpo":
        return total / n_valid.clamp(min=1)
    if loss_type == "dr_grpo":
        if max_completion_length is None or max_completion_length < 1:
            raise ValueError(
                f"loss_type='dr_grpo' needs max_completion_length >= 1, got {max_completion_length!r}"
            )
        if per_token.shape[1] > max_completion_length:
            raise ValueError(
                f"max_completion_length={max_completion_length} is shorter than the "
                f"{per_token.shape[1]} token"
                " slots of logp: it must be the generation limit (max_new_tokens)"
            )
        return total / (per_token.shape[0] * max_completion_length)
    if num_items_in_batch is not None and num_items_in_batch < 0:  # dapo
        raise ValueError(f"num_items_in_batch must be >= 0, got {num_items_in_batch}")
    n = n_valid.clamp(min=1) if num_items_in_batch is None else max(float(num_items_in_batch), 1.0)
    return total / n


@torch.no_grad()
def _token_stats(ratio, adv, valid, kl, eps_low: float, eps_high: float) -> dict[str, float]:
    """Means over valid tokens: kl, ratio, and the clip fractions (tokens whose gradient the clip cuts)."""
    m = valid.to(ratio.dtype)
    n_tok = m.sum().clamp(min=1)
    low = ((ratio < 1 - eps_low) & (adv < 0) & valid).sum() / n_tok
    high = ((ratio > 1 + eps_high) & (adv > 0) & valid).sum() / n_tok
    return {
        "kl": float((kl * m).sum() / n_tok) if kl is not None else 0.0,
        "clip_frac": float(low + high),
        "clip_frac_low": float(low),
        "clip_frac_high": float(high),
        "ratio_mean": float((ratio * m).sum() / n_tok),
    }
