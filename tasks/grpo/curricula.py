"""Curriculum samplers for GRPO: ``dump``, ``prioritized`` and ``static`` (the interface is
``tasks.grpo.sampler.PromptSampler``; constants come from ``CurriculumConfig``).

- ``dump`` (DUMP, Wang et al. 2025): arms are sources; stat_j = mean |advantage| of arm j's last
  ``window`` *rollouts* (single completions; 0 before any), so a source with all-equal groups (too
  hard or solved) sinks. score_j = stat_j + ``c`` * sqrt(2 ln(N + 1) / (n_j + 1)) where n_j is
  the number of *prompts* (groups) of arm j passed to ``update`` so far and N = sum_j n_j;
  p = softmax(score / ``tau``). Before any update every score is 0: uniform over sources.
  Counting prompts is our change: one group is one decision to look at an arm. DUMP's own code
  counts rollouts (``count: rollouts``: n_j grows by G per group, so the bonus is smaller and
  shrinks faster).
- ``prioritized`` (Kimi k1.5): a success rate per source (``level="source"``) or per prompt id
  (``"prompt"``), starting at 0; each ``update`` moves a key present in the batch once:
  rate <- ``ema`` * rate + (1 - ``ema``) * (its mean group accuracy in the batch). Weight =
  max(1 - rate, ``min_prob``): the floor is on the *weight*, before normalising, so a mastered key
  keeps probability min_prob / sum(weights) > 0 (all weights 0, possible only with min_prob 0:
  uniform). At prompt level prompts are drawn directly, no repeats inside one ``sample`` call.
- ``static``: easy -> hard. Sources in ``order``, else by ascending difficulty (ties by name); the
  pool starts with the first and gains the next every ``stage_steps`` ``update`` calls (not
  ``sample`` calls: dynamic sampling may sample several times per step). Uniform without
  replacement over the pool's prompts; a stage change starts a fresh epoch.

Arm-based draws (``dump``, ``prioritized`` by source): per prompt, an arm from the probabilities,
then the next row of that arm's shuffled queue (no repeats within an arm until it is exhausted).
"""

from __future__ import annotations

import math
import random
from collections import deque
from functools import partial
from typing import Any

from tasks.config.grpo import CurriculumConfig
from tasks.grpo.online import OnlineModel, next_row


def as_rng_state(state: Any) -> tuple:
    # JSON round trips turn the RNG state's tuples into lists.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def with_online(state: dict[str, Any], online: OnlineModel | None) -> dict[str, Any]:
    """A sampler's state plus its online model's (a sampler without one keeps its old layout)."""
    return state if online is None else {**state, "online": online.state_dict()}


def load_online(state: dict[str, Any], online: OnlineModel | None) -> None:
    if (online is None) != ("online" not in state):
        raise ValueError("sampler state and this run disagree on grpo.online.enabled")
    if online is not None:
        online.load_state_dict(state["online"])


# ----------------------------------------------------------------------------- math
def ucb_scores(stat: list[float], n: list[int], c: float) -> list[float]:
    """DUMP's score per arm: stat_j + c * sqrt(2 ln(N + 1) / (n_j + 1)), N = sum(n)."""
    big_n = sum(n)
    return [s + c * math.sqrt(2 * math.log(big_n + 1) / (nj + 1)) for s, nj in zip(stat, n)]


def softmax(x: list[float], tau: float) -> list[float]:
    top = max(x)  # shift by the max: exp never overflows at small tau
    e = [math.exp((v - top) / tau) for v in x]
    return [v / sum(e) for v in e]


def priority_probs(rates: list[float], floor: float) -> list[float]:
    """p_i proportional to max(1 - rate_i, floor); uniform if every weight is 0 (floor 0, all mastered)."""
    w = [max(1.0 - r, floor) for r in rates]
    total = sum(w)
    return [v / total for v in w] if total > 0 else [1 / len(w)] * len(w)


def _draw(rng: random.Random, weights: list[float]) -> int:
    """One index with probability weights[i] / sum(weights) (the sum must be > 0)."""
    u = rng.random() * sum(weights)
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if u < acc:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)  # u landed on the float rounding edge


def _prompts(stats: dict[str, Any], with_adv: bool) -> list[tuple[dict, float, list[float]]]:
    """(row, group accuracy, the group's |advantages|) per prompt, checking the layout."""
    rows, acc = stats["rows"], stats["accuracy"]
    if len(acc) != len(rows):
        raise ValueError(f"update: {len(rows)} rows but {len(acc)} accuracies")
    if not with_adv or not rows:
        return [(r, a, []) for r, a in zip(rows, acc)]
    adv = stats["advantages"]
    g = len(adv) // len(rows)
    if g < 1 or g * len(rows) != len(adv):
        raise ValueError(f"update: {len(adv)} advantages are not whole groups of {len(rows)} prompts")
    return [(r, a, [abs(x) for x in adv[i * g : (i + 1) * g]]) for i, (r, a) in enumerate(zip(rows, acc))]


class _ArmSampler:
    """Shared by the arm-based samplers: sources as arms, a seeded RNG, a shuffled queue per arm."""

    def __init__(self, sources: list[str], seed: int, cfg: CurriculumConfig, online: OnlineModel | None):
        self.cfg, self.sources, self.online = cfg, sources, online
        self.arms = sorted(set(sources))
        self.rng = random.Random(seed)
        self.rows: dict[str, list[int]] = {a: [] for a in self.arms}
        for i, s in enumerate(sources):
            self.rows[s].append(i)
        self.queues: dict[str, list[int]] = {a: [] for a in self.arms}

    def _arm(self, source: str) -> int:
        if source not in self.rows:
            raise ValueError(f"update: source {source!r} is not one of the sampler's sources {self.arms}")
        return self.arms.index(source)

    def _draw_by_arm(self, probs: list[float], k: int) -> list[int]:
        out = []
        for _ in range(k):
            arm = self.arms[_draw(self.rng, probs)]
            out.append(next_row(self.queues[arm], partial(self._epoch, arm), self.online, self.rng))
        return out

    def _epoch(self, arm: str) -> list[int]:
        """The arm's epoch is over: a fresh permutation of its rows."""
        queue = list(self.rows[arm])
        self.rng.shuffle(queue)
        return queue

    def _learn(self, stats: dict[str, Any]) -> None:
        if self.online is not None:
            self.online.update(stats)

    def _base_state(self) -> dict[str, Any]:
        queues = {a: list(q) for a, q in self.queues.items()}
        state = {"rng": self.rng.getstate(), "arms": list(self.arms), "queues": queues}
        return with_online(state, self.online)

    def _load_base(self, state: dict[str, Any]) -> None:
        if list(state["arms"]) != self.arms:
            raise ValueError(f"sampler state is for sources {list(state['arms'])}, this run has {self.arms}")
        self.rng.setstate(as_rng_state(state["rng"]))
        self.queues = {a: list(state["queues"][a]) for a in self.arms}
        load_online(state, self.online)


# ----------------------------------------------------------------------------- curricula
class DumpSampler(_ArmSampler):
    """DUMP: p = softmax((stat_j + c * sqrt(2 ln(N + 1) / (n_j + 1))) / tau) over sources, where
    stat_j = mean |advantage| of arm j's last cfg.window rollouts (0 with none), n_j = arm j's
    prompts (groups) seen by ``update`` and N = sum_j n_j."""

    def __init__(
        self, sources: list[str], seed: int, cfg: CurriculumConfig, online: OnlineModel | None = None
    ):
        super().__init__(sources, seed, cfg, online)
        self.abs_adv: dict[str, deque[float]] = {
            a: deque(maxlen=cfg.window) for a in self.arms
        }  # one per rollout
        self.acc: dict[str, deque[float]] = {
            a: deque(maxlen=cfg.window) for a in self.arms
        }  # its group's accuracy
        self.prompts = dict.fromkeys(self.arms, 0)  # n_j
        self.rollouts = dict.fromkeys(self.arms, 0)

    def _stat(self, arm: str) -> float:
        w = self.abs_adv[arm]
        return sum(w) / len(w) if w else 0.0

    def _scores(self) -> list[float]:
        visits = self.prompts if self.cfg.count == "prompts" else self.rollouts
        n = [visits[a] for a in self.arms]
        return ucb_scores([self._stat(a) for a in self.arms], n, self.cfg.c)

    def sample(self, k: int) -> list[int]:
        return self._draw_by_arm(softmax(self._scores(), self.cfg.tau), k)

    def update(self, stats: dict[str, Any]) -> None:
        for row, acc, abs_adv in _prompts(stats, with_adv=True):
            arm = self.arms[self._arm(row["source"])]
            self.abs_adv[arm].extend(abs_adv)
            self.acc[arm].extend([acc] * len(abs_adv))
            self.prompts[arm] += 1
            self.rollouts[arm] += len(abs_adv)
        self._learn(stats)

    def probabilities(self) -> dict[str, float]:
        return dict(zip(self.arms, softmax(self._scores(), self.cfg.tau)))

    def arm_stats(self) -> dict[str, dict[str, float]]:
        scores, probs = self._scores(), self.probabilities()
        return {
            a: {
                "window_mean_abs_adv": self._stat(a),
                "window_success_rate": sum(self.acc[a]) / len(self.acc[a]) if self.acc[a] else 0.0,
                "ucb": score,
                "prob": probs[a],
                "prompts": self.prompts[a],
                "rollouts": self.rollouts[a],
            }
            for a, score in zip(self.arms, scores)
        }

    def state_dict(self) -> dict[str, Any]:
        windows = {a: [list(self.abs_adv[a]), list(self.acc[a])] for a in self.arms}
        counts = {"prompts": dict(self.prompts), "rollouts": dict(self.rollouts)}
        return {**self._base_state(), "windows": windows, **counts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base(state)
        self.abs_adv = {a: deque(state["windows"][a][0], maxlen=self.cfg.window) for a in self.arms}
        self.acc = {a: deque(state["windows"][a][1], maxlen=self.cfg.window) for a in self.arms}
        self.prompts = {a: int(state["prompts"][a]) for a in self.arms}
        self.rollouts = {a: int(state["rollouts"][a]) for a in self.arms}


class PrioritizedSampler(_ArmSampler):
    """Kimi k1.5: p proportional to max(1 - rate, cfg.min_prob), rate = EMA (decay cfg.ema, start 0)
    of group accuracy per source (cfg.level "source") or per prompt id (cfg.level "prompt")."""

    def __init__(
        self,
        sources: list[str],
        seed: int,
        cfg: CurriculumConfig,
        ids: list | None = None,
        online: OnlineModel | None = None,
    ):
        if online is not None and cfg.level == "prompt":
            raise ValueError("prioritized at level 'prompt' already picks prompts: no online model on top")
        super().__init__(sources, seed, cfg, online)
        if cfg.level == "prompt":
            if ids is None or len(ids) != len(sources):
                raise ValueError("prioritized level 'prompt' needs one id per row (build_sampler(..., ids=))")
            self.index = {pid: i for i, pid in enumerate(ids)}
            if len(self.index) != len(ids):
                raise ValueError("prioritized level 'prompt': row ids are not unique")
        n_keys = len(sources) if cfg.level == "prompt" else len(self.arms)
        self.rates = [0.0] * n_keys  # unseen = rate 0 = the highest priority
        self.seen = [0] * n_keys  # updates that moved each key's rate

    def _key(self, row: dict) -> int:
        if self.cfg.level == "source":
            return self._arm(row["source"])
        if row["id"] not in self.index:
            raise ValueError(f"update: prompt id {row['id']!r} is not in the sampler's rows")
        return self.index[row["id"]]

    def sample(self, k: int) -> list[int]:
        p = priority_probs(self.rates, self.cfg.min_prob)
        if self.cfg.level == "source":
            return self._draw_by_arm(p, k)
        out: list[int] = []
        left = list(p)
        for _ in range(k):
            if sum(left) <= 0:  # every prompt with weight drawn once in this call: allow repeats
                left = list(p)
            out.append(_draw(self.rng, left))
            left[out[-1]] = 0.0
        return out

    def update(self, stats: dict[str, Any]) -> None:
        batch: dict[int, list[float]] = {}
        for row, acc, _ in _prompts(stats, with_adv=False):
            batch.setdefault(self._key(row), []).append(acc)
        d = self.cfg.ema
        for key, accs in batch.items():  # one EMA step per key and update, however often it was drawn
            self.rates[key] = d * self.rates[key] + (1 - d) * sum(accs) / len(accs)
            self.seen[key] += 1
        self._learn(stats)

    def probabilities(self) -> dict[str, float]:
        p = priority_probs(self.rates, self.cfg.min_prob)
        if self.cfg.level == "source":
            return dict(zip(self.arms, p))
        return {a: sum(p[i] for i in self.rows[a]) for a in self.arms}

    def arm_stats(self) -> dict[str, dict[str, float]]:
        probs = self.probabilities()
        if self.cfg.level == "source":
            rows = zip(self.arms, self.rates, self.seen)
            return {a: {"success_rate": r, "updates": n, "prob": probs[a]} for a, r, n in rows}
        return {
            a: {
                "mean_success_rate": sum(self.rates[i] for i in keys) / len(keys),
                "prompts_seen": sum(self.seen[i] > 0 for i in keys),
                "prompts": len(keys),
                "prob": probs[a],
            }
            for a, keys in self.rows.items()
        }

    def state_dict(self) -> dict[str, Any]:
        return {**self._base_state(), "level": self.cfg.level, "rates": self.rates[:], "seen": self.seen[:]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["level"] != self.cfg.level or len(state["rates"]) != len(self.rates):
            raise ValueError(f"sampler state is for level {state['level']!r} with {len(state['rates'])} keys")
        self._load_base(state)
        self.rates = [float(r) for r in state["rates"]]
        self.seen = [int(n) for n in state["seen"]]


def static_order(sources: list[str], order: list[str] | None, difficulties: list[int] | None) -> list[str]:
    """Sources easiest first: ``order`` as given (checked), else ascending difficulty, ties by name
    (a missing difficulty, None or negative, is an error rather than a silent "easiest")."""
    present = sorted(set(sources))
    if order is not None:
        unknown = [s for s in order if s not in present]
        if unknown:
            raise ValueError(f"static order: unknown source {unknown[0]!r}; sources: {present}")
        missing = [s for s in present if s not in order]
        if missing or len(set(order)) != len(order):
            raise ValueError(f"static order must list every source once; missing {missing}, given {order}")
        return list(order)
    if difficulties is None:
        raise ValueError("static sampler needs difficulties (one per row) or curriculum.order")
    level: dict[str, int] = {}
    for s, d in zip(sources, difficulties):
        if d is None or d < 0:  # the trainer's marker for a row without a difficulty column
            raise ValueError(f"source {s!r} has no difficulty ({d}); set grpo.curriculum.order")
        if level.setdefault(s, d) != d:
            raise ValueError(f"source {s!r} has several difficulties ({level[s]} and {d})")
    return sorted(present, key=lambda s: (level[s], s))


class StaticSampler:
    """Easy -> hard: after u ``update`` calls the pool is the first min(u // cfg.stage_steps,
    n_sources - 1) + 1 sources of ``static_order``; uniform without replacement over its prompts."""

    def __init__(
        self,
        sources: list[str],
        seed: int,
        cfg: CurriculumConfig,
        difficulties: list[int] | None,
        online: OnlineModel | None = None,
    ):
        self.cfg, self.sources, self.online = cfg, sources, online
        self.order = static_order(sources, cfg.order, difficulties)
        self.rng = random.Random(seed)
        self.queue: list[int] = []
        self.steps = 0  # update calls so far

    def stage(self) -> int:
        return min(self.steps // self.cfg.stage_steps, len(self.order) - 1)

    def _epoch(self) -> list[int]:
        pool = set(self.order[: self.stage() + 1])
        queue = [i for i, s in enumerate(self.sources) if s in pool]
        self.rng.shuffle(queue)
        return queue

    def sample(self, k: int) -> list[int]:
        return [next_row(self.queue, self._epoch, self.online, self.rng) for _ in range(k)]

    def update(self, stats: dict[str, Any]) -> None:
        before = self.stage()
        self.steps += 1
        if self.stage() != before:
            self.queue = []  # a source joined: a fresh epoch over the bigger pool
        if self.online is not None:
            self.online.update(stats)

    def probabilities(self) -> dict[str, float]:
        pool = set(self.order[: self.stage() + 1])
        n = sum(s in pool for s in self.sources)
        return {a: sum(s == a for s in self.sources) / n * (a in pool) for a in sorted(self.order)}

    def arm_stats(self) -> dict[str, dict[str, float]]:
        at, now = self.cfg.stage_steps, self.stage()
        return {a: {"in_pool": float(j <= now), "joins_at_step": j * at} for j, a in enumerate(self.order)}

    def state_dict(self) -> dict[str, Any]:
        rng = self.rng.getstate()
        state = {"rng": rng, "order": self.order[:], "queue": self.queue[:], "steps": self.steps}
        return with_online(state, self.online)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["order"]) != self.order:
            raise ValueError(f"sampler state has order {list(state['order'])}, this run has {self.order}")
        self.rng.setstate(as_rng_state(state["rng"]))
        self.queue = list(state["queue"])
        self.steps = int(state["steps"])
        load_online(state, self.online)
