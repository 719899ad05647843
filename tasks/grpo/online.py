"""An online per-prompt difficulty model: skip a prompt *before* generating its group when the
group is predicted to be all-equal (always solved or never solved), and prefer prompts near a pass
rate of 0.5 (``grpo.online``; in the spirit of online difficulty filtering, GRESO and MoPPS).

Choices:

- Each prompt i has a Beta posterior over its pass rate p_i: Beta(m * mu + s_i, m * (1 - mu) +
  f_i), where s_i / f_i are its observed passes / failures (discounted by ``decay`` each time it
  is seen again: the policy moves). The prior is its source's, fitted online as a beta-binomial
  by moments from every group of the source (sums of the group pass shares x and x^2, discounted
  by ``decay`` at every update): mu = the mean share (mu = 0.5 for a source never seen), and the
  strength m from the spread of the shares between groups: Var(x) = mu (1 - mu) / G * (1 + (G -
  1) rho) with rho = 1 / (m + 1). So a source whose prompts are each either solved or hopeless
  (sub_2d here: right on a - b > 0, wrong below zero) gets m < 1, a U-shaped prior and a high
  P_flat although its mean is 0.5; a source of uniformly middling prompts gets a large m. Until a
  source has 4 groups, and for a row whose ``pass_rate`` column curation estimated (then mu is
  that column), m = ``prior_strength``. Most prompts are seen once per run, so the source prior
  does most of the work and a prompt's own outcomes refine it.
- "Pass" is a completion's verified success (``Rollout.accuracy``: the accuracy reward, or the
  code reward on code rows). The group of G completions is all-equal in success with probability
  P_flat = E[p^G + (1 - p)^G] under the posterior, in closed form: B(a + G, b) / B(a, b) +
  B(a, b + G) / B(a, b).
- The sampler proposes rows as it always does (uniform epochs, or DUMP's source then that
  source's next rows): ``proposals`` of them per batch slot. The slot takes the proposal least
  likely to give an all-equal group (the lowest P_flat, which is the one nearest p = 0.5 under its
  posterior; ties: the first); the others are skipped for the epoch. With probability
  ``explore`` the slot takes the first proposal whatever its P_flat, so every prompt stays
  reachable and a prompt wrongly believed solved or hopeless is seen again and corrected. A
  proportional rule (accept with probability 1 - P_flat, retried) left about as many groups flat
  on the embedded default (53-57% against 52-55%); best-of-N is kept for its fixed cost per slot.
- The model learns only from ``update`` (the trainer's step statistics); evaluation never calls
  it. Its state (posteriors, counters) is part of the sampler's state, so a resume is exact.
- Logged every step (``metrics``): ``skip_rate``, the share of proposals passed over as predicted
  flat (P_flat >= 0.5); the mean predicted P_flat of the chosen prompts against the share of their
  groups observed flat (all advantages 0); a 5-bin histogram of the chosen prompts' posterior mean
  pass rates; each source's prior mean and strength.
"""

from __future__ import annotations

import math
import random
from typing import Any

from tasks.config.grpo import OnlineConfig

HIST_BINS = 5


def flat_probability(a: float, b: float, g: int) -> float:
    """P(all g completions pass or all fail) when p ~ Beta(a, b): E[p^g + (1 - p)^g]."""
    log_b = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    up = math.lgamma(a + g) + math.lgamma(b) - math.lgamma(a + b + g)
    down = math.lgamma(a) + math.lgamma(b + g) - math.lgamma(a + b + g)
    return math.exp(up - log_b) + math.exp(down - log_b)


class OnlineModel:
    """Posteriors over the RL rows' pass rates (row i: sources[i], ids[i], pass_rates[i] or None)."""

    def __init__(
        self,
        sources: list[str],
        ids: list,
        group_size: int,
        cfg: OnlineConfig,
        pass_rates: list[float | None] | None = None,
    ):
        if len(ids) != len(sources) or len(set(ids)) != len(ids):
            raise ValueError("grpo.online needs one unique id per RL row")
        self.cfg, self.g, self.sources = cfg, group_size, sources
        self.index = {pid: i for i, pid in enumerate(ids)}
        self.prior = list(pass_rates) if pass_rates is not None else [None] * len(sources)
        # per source, discounted: [groups, sum of pass shares, sum of squared pass shares]
        self.pooled: dict[str, list[float]] = {s: [0.0, 0.0, 0.0] for s in sorted(set(sources))}
        self.seen: dict[int, list[float]] = {}  # row -> [passes, fails], discounted
        self.pending: dict[int, float] = {}  # chosen row -> predicted P_flat, until its update
        self.window = {"proposed": 0, "skipped": 0}
        self.last: dict[str, float] = {}

    def source_prior(self, source: str) -> tuple[float, float]:
        """(mu, m) of a source's beta-binomial prior, by moments (see the module docstring)."""
        w, s1, s2 = self.pooled[source]
        if w < 4.0:
            return (s1 + 0.5) / (w + 1.0), self.cfg.prior_strength
        mu = s1 / w
        spread = max(s2 / w - mu * mu, 0.0)
        base = mu * (1.0 - mu)
        if base <= 1e-9:  # every group all right (or all wrong): as sure as the data can make us
            return min(max(mu, 1e-3), 1 - 1e-3), 1e3
        rho = min(max((spread * self.g / base - 1.0) / (self.g - 1), 1e-3), 1.0 - 1e-3)
        return mu, 1.0 / rho - 1.0

    def posterior(self, i: int) -> tuple[float, float]:
        mu, m = self.source_prior(self.sources[i])
        column = self.prior[i]
        if column is not None and 0.0 <= column <= 1.0:
            mu, m = column, self.cfg.prior_strength
        # clamped so that a prior of exactly 0 or 1 stays a proper Beta
        mu = min(max(mu, 1e-3), 1.0 - 1e-3)
        s_i, f_i = self.seen.get(i, (0.0, 0.0))
        return m * mu + s_i, m * (1.0 - mu) + f_i

    def choose(self, proposals: list[int], rng: random.Random) -> int:
        """The slot's row among the proposals (see the module docstring); the rest are skipped."""
        flat = [flat_probability(*self.posterior(i), self.g) for i in proposals]
        pick = 0 if rng.random() < self.cfg.explore else min(range(len(flat)), key=flat.__getitem__)
        self.window["proposed"] += len(proposals)
        self.window["skipped"] += sum(f >= 0.5 for k, f in enumerate(flat) if k != pick)
        self.pending[proposals[pick]] = flat[pick]
        return proposals[pick]

    def update(self, stats: dict[str, Any]) -> None:
        """Learn from one step's groups: ``rows``, group ``accuracy`` and ``advantages``."""
        rows, acc, adv = stats["rows"], stats["accuracy"], stats["advantages"]
        g = len(adv) // max(len(rows), 1)
        d = self.cfg.decay
        for sums in self.pooled.values():
            sums[:] = [d * x for x in sums]
        predicted, flat, means = [], [], []
        for k, (row, a) in enumerate(zip(rows, acc)):
            i = self.index.get(row["id"])
            if i is None:
                raise ValueError(f"update: prompt id {row['id']!r} is not one of the RL rows")
            passes = a * g
            s_i, f_i = self.seen.get(i, (0.0, 0.0))
            self.seen[i] = [d * s_i + passes, d * f_i + g - passes]
            pooled = self.pooled[self.sources[i]]
            pooled[0] += 1.0
            pooled[1] += a
            pooled[2] += a * a
            if i in self.pending:
                predicted.append(self.pending.pop(i))
                flat.append(float(all(x == 0 for x in adv[k * g : (k + 1) * g])))
            a_post, b_post = self.posterior(i)
            means.append(a_post / (a_post + b_post))
        self.last = self._summary(predicted, flat, means)

    def _summary(self, predicted: list[float], flat: list[float], means: list[float]) -> dict[str, float]:
        w = self.window
        out = {
            "skip_rate": w["skipped"] / w["proposed"] if w["proposed"] else 0.0,
            "predicted_flat": sum(predicted) / len(predicted) if predicted else float("nan"),
            "observed_flat": sum(flat) / len(flat) if flat else float("nan"),
        }
        for b in range(HIST_BINS):
            lo, hi = b / HIST_BINS, (b + 1) / HIST_BINS
            inside = sum(lo <= m < hi or (b == HIST_BINS - 1 and m == 1.0) for m in means)
            out[f"pass_rate_hist/{lo:.1f}-{hi:.1f}"] = float(inside)
        self.window = {"proposed": 0, "skipped": 0}
        return out

    def metrics(self) -> dict[str, float]:
        """The last update's statistics plus each source's prior (mean and strength), for the tracker."""
        out = dict(self.last)
        for s in self.pooled:
            mu, m = self.source_prior(s)
            out.update({f"pooled_pass_rate/{s}": mu, f"prior_strength/{s}": m})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "pooled": {s: list(c) for s, c in self.pooled.items()},
            "seen": [[i, c[0], c[1]] for i, c in sorted(self.seen.items())],
            "pending": [[i, p] for i, p in sorted(self.pending.items())],
            "window": dict(self.window),
            "last": dict(self.last),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if sorted(state["pooled"]) != sorted(self.pooled):
            theirs, ours = sorted(state["pooled"]), sorted(self.pooled)
            raise ValueError(f"online state is for sources {theirs}, this run has {ours}")
        self.pooled = {s: [float(x) for x in c] for s, c in state["pooled"].items()}
        self.seen = {int(i): [float(s), float(f)] for i, s, f in state["seen"]}
        self.pending = {int(i): float(p) for i, p in state["pending"]}
        self.window = {k: int(v) for k, v in state["window"].items()}
        self.last = {k: float(v) for k, v in state["last"].items()}


def next_row(queue: list[int], refill, online: OnlineModel | None, rng: random.Random) -> int:
    """The next row from ``queue`` (``refill()`` makes a fresh epoch when it runs dry); with the
    online model, the best of ``proposals`` rows popped from it."""
    proposals = []
    for _ in range(online.cfg.proposals if online is not None else 1):
        if not queue:
            queue.extend(refill())
        proposals.append(queue.pop())
    return proposals[0] if online is None else online.choose(proposals, rng)
