"""The GRPO trainer's options on a real tiny model, a real reward executor and real rollouts.

What is checked, each against a value worked out independently of the trainer:

- ``lr_at``: warmup, then constant / cosine / linear, by hand for lr=1, warmup 2, 10 steps.
- gradient accumulation: for grpo, dr_grpo and dapo the parameter change of one ``update`` is the
  gradient of the *whole batch's* loss (computed here with ``policy_loss`` on all rows at once),
  whatever ``grad_accum`` and however the kept groups are split into rounds; bnpo is a per-micro-
  batch token mean by definition (the mean of each micro-batch's own gradient), which differs.
- trimmed, length-bucketed passes (``trim``, ``buckets``, ``work_items``): the same parameter change
  and metrics as one padded pass per micro-batch, for every loss type, with mu = 2, mask_truncated,
  beta > 0 and grad_accum 2 too.
- ``num_iterations``: the first pass's log-probs are pi_old for every later pass (a replay by hand,
  and a count of forward passes: mu * micro-batches, no extra one for pi_old).
- ``mask_truncated``: truncated completions add nothing and rescale nothing else.
- dynamic sampling (``collect``): flat groups are dropped and more rounds drawn; everything seen
  still reaches the prompt sampler; ``completions_table`` flags exactly the groups trained on.
- the length reward gets the token facts: DAPO's overlong formula on ``completion_mask.sum(1)``.
- held-out evaluation leaves the curriculum sampler (and the training RNG) untouched.

The model is a 2-layer, 32-wide Qwen2 whose output head has a bias towards EOS, so completions end
at varied lengths (an untrained model almost never emits EOS, and every completion would be cut).
Custom rewards live at module level: the executor's spawned workers import them by reference.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from tasks.config import GRPOConfig, ModelConfig, TinyModel
from tasks.data.synthetic import generate_family
from tasks.generation import Samples, completion_logprobs
from tasks.grpo.batching import buckets, micro_batches, trim, work_items
from tasks.grpo.loss import policy_loss
from tasks.grpo.rollout import Rollout, collect, generate_and_score
from tasks.grpo.sampler import build_sampler
from tasks.grpo.train import completions_table, train_step, update
from tasks.models import build_tiny, load_model, load_tokenizer
from tasks.rewards import REWARDS
from tasks.rewards.executor import RewardExecutor
from tasks.schedule import lr_at
from tasks.stages.evaluate import heldout_accuracy

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: per-op overhead, one thread is faster

ROOT = Path(__file__).resolve().parents[2]
TINY = TinyModel(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                 intermediate_size=64)
EOS_BIAS = 2.5  # p(EOS) ~ e^2.5 / (e^2.5 + 107) ~ 10% per token at init: lengths 1..8 all occur
ROW_KEYS = ("id", "source", "prompt", "answer", "difficulty")


# ----------------------------------------------------------------------------- custom rewards
def noise(completion: object, row: dict) -> float:
    """Different for (almost) every distinct text: a group of random completions is never flat."""
    text = str(completion)
    return len(text) + sum(map(ord, text)) / 1000.0


def noise_if_add(completion: object, row: dict) -> float:
    """``noise`` on add_2d rows, a constant 0 on every other source (their groups are flat)."""
    return noise(completion, row) if row["source"] == "add_2d" else 0.0


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny(ModelConfig(tiny=TINY, seed=0), tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    return load_tokenizer(tiny_dir)


@pytest.fixture(scope="module")
def policy(tiny_dir, tokenizer):
    """The tiny model with an untied output head: the embedding matrix plus a bias on EOS.
    Tests deepcopy it; nobody trains this one."""
    model = load_model(tiny_dir)
    emb = model.get_input_embeddings().weight
    head = torch.nn.Linear(emb.shape[1], emb.shape[0], bias=True)
    with torch.no_grad():
        head.weight.copy_(emb)
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = EOS_BIAS
    model.lm_head = head
    model.config.tie_word_embeddings = False
    return model


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    """Six rows from each of two synthetic sources, shaped like the rl split."""
    out = generate_family("add_2d", 6, 0) + generate_family("sub_2d", 6, 0)
    return [{k: r[k] for k in ROW_KEYS} for r in out]


@pytest.fixture(scope="module", autouse=True)
def executor():
    """One worker for the module. Autouse so it starts first: the worker imports this module (for
    the custom rewards), torch and transformers included, which overlaps the model build."""
    rewards = {**REWARDS, "noise": noise, "noise_if_add": noise_if_add}
    with RewardExecutor(1, timeout_s=5, rewards=rewards) as ex:
        yield ex


def grpo_cfg(rewards: dict[str, float] | None = None, **over) -> GRPOConfig:
    """Small settings; SGD-friendly (no warmup, no clipping) unless overridden. ``rewards`` may name
    this module's rewards: they are set after validation (the validator knows only the registry)."""
    fields = {"prompts_per_step": 2, "group_size": 4, "max_new_tokens": 8, "warmup_steps": 0, "lr": 1.0,
              "max_grad_norm": 1e6, "overlong_cache": 4, "reward_workers": 1, "rewards": {"length": 1.0}}
    cfg = GRPOConfig(**(fields | over))
    return cfg.model_copy(update={"rewards": rewards}) if rewards else cfg


def hand_rollout(samples: Samples, rows: list[dict], advantages: list[float]) -> Rollout:
    """A rollout with chosen advantages (one completion per group, so any subset of rows is whole groups)."""
    n = len(samples.texts)
    assert len(advantages) == n and len(rows) == n
    return Rollout(rows, samples, torch.zeros(n), torch.tensor(advantages), {}, 1)


def sgd_delta(model, kept: list[Rollout], cfg: GRPOConfig, lr: float = 1.0) -> tuple[list, dict]:
    """Parameter change of one ``update`` on a copy of ``model`` with plain SGD: -lr * gradient."""
    m = copy.deepcopy(model)
    before = [p.detach().clone() for p in m.parameters()]
    stats = update(m, None, kept, cfg, torch.optim.SGD(m.parameters(), lr=lr))
    return [p.detach() - b for p, b in zip(m.parameters(), before)], stats


def loss_grad(model, samples: Samples, advantages: torch.Tensor, cfg: GRPOConfig) -> list[torch.Tensor]:
    """Gradient of ``policy_loss`` on all of ``samples`` at once, pi_old = the current policy."""
    m = copy.deepcopy(model).train()
    logp = completion_logprobs(m, samples)
    loss, _ = policy_loss(logp, logp.detach(), advantages, samples.completion_mask, loss_type=cfg.loss_type,
                          epsilon=cfg.epsilon, max_completion_length=cfg.max_new_tokens)
    loss.backward()
    return [p.grad.detach().clone() for p in m.parameters()]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor], atol: float = 1e-6) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=atol)


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def norm(ts: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float((t * t).sum()) for t in ts))


def rollout_of(policy, tokenizer, rows, executor, cfg: GRPOConfig, seed: int) -> Rollout:
    return generate_and_score(policy, tokenizer, rows, cfg, executor, torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- 1. learning rate
@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        # steps 0, 1 warm up (lr * (step + 1) / 2); decay runs over the 8 steps 2..9, reaching 0 at 10
        ("constant", {0: 0.5, 1: 1.0, 2: 1.0, 6: 1.0, 9: 1.0}),
        # 0.5 * (1 + cos(pi * (step - 2) / 8))
        ("cosine", {0: 0.5, 1: 1.0, 2: 1.0, 4: 0.5 * (1 + math.sqrt(0.5)), 6: 0.5,
                    9: 0.5 * (1 + math.cos(7 * math.pi / 8)), 10: 0.0}),
        # 1 - (step - 2) / 8
        ("linear", {0: 0.5, 1: 1.0, 2: 1.0, 4: 0.75, 6: 0.5, 9: 0.125, 10: 0.0}),
    ],
)
def test_lr_at_warmup_then_schedule(schedule, expected):
    cfg = GRPOConfig(lr=1.0, warmup_steps=2, steps=10, lr_schedule=schedule)
    assert {s: lr_at(s, cfg) for s in expected} == pytest.approx(expected, abs=1e-12)


def test_lr_at_without_warmup_starts_at_full_lr():
    cfg = GRPOConfig(lr=0.5, warmup_steps=0, steps=4, lr_schedule="linear")
    assert [lr_at(s, cfg) for s in range(4)] == pytest.approx([0.5, 0.375, 0.25, 0.125])


# ----------------------------------------------------------------------------- 2. gradient accumulation
@pytest.fixture(scope="module")
def batch(policy, tokenizer, rows, executor) -> Rollout:
    """4 groups of 2 completions with fixed non-zero advantages and unequal lengths."""
    cfg = grpo_cfg(prompts_per_step=4, group_size=2)
    ro = rollout_of(policy, tokenizer, rows[:2] + rows[6:8], executor, cfg, seed=1)
    ro.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, -2.0, 2.0, 0.3, -0.3])
    lengths = ro.samples.completion_mask.sum(1).view(4, 2).sum(1)
    assert len(set(lengths.tolist())) > 1, f"precondition: groups of unequal token counts, got {lengths}"
    return ro


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_grad_accum_gives_the_whole_batch_gradient(policy, batch, loss_type):
    cfg = grpo_cfg(prompts_per_step=4, group_size=2, loss_type=loss_type)
    grad = loss_grad(policy, batch.samples, batch.advantages, cfg)
    expected = [-g for g in grad]  # SGD with lr 1 and no clipping
    assert norm(expected) > 1e-3, "precondition: the batch has a gradient"
    for grad_accum in (1, 2, 4):
        delta, _ = sgd_delta(policy, [batch], cfg.model_copy(update={"grad_accum": grad_accum}))
        assert_same(delta, expected)
    # Dynamic sampling keeps groups from several rounds: micro-batches never span two of them.
    split = [batch.groups([0, 1, 2]), batch.groups([3])]
    cfg2 = cfg.model_copy(update={"grad_accum": 2})
    assert [p.n_groups for p in micro_batches(split, cfg2)] == [2, 1, 1]
    delta, _ = sgd_delta(policy, split, cfg2)
    assert_same(delta, expected)


def test_bnpo_is_the_mean_of_micro_batch_token_means(policy, batch):
    cfg = grpo_cfg(prompts_per_step=4, group_size=2, loss_type="bnpo")
    whole = [-g for g in loss_grad(policy, batch.samples, batch.advantages, cfg)]
    delta1, _ = sgd_delta(policy, [batch], cfg)
    assert_same(delta1, whole)  # one micro-batch: bnpo is the batch's token mean (= dapo)
    pieces = [batch.groups([i]) for i in range(4)]
    per_piece = [loss_grad(policy, p.samples, p.advantages, cfg) for p in pieces]
    expected = [-sum(gs) / 4 for gs in zip(*per_piece)]
    delta4, _ = sgd_delta(policy, [batch], cfg.model_copy(update={"grad_accum": 4}))
    assert_same(delta4, expected)
    assert max_diff(delta4, whole) > 1e-3  # unequal token counts: micro-batch means weigh tokens unequally


# ----------------------------------------------------------------------------- 2b. trimmed, length-bucketed passes
def test_buckets_sort_rows_by_last_counted_slot():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]])
    # last counted slot per row: 3, 1, 4, 2, 0, 3 -> sorted rows 4, 1, 3, 0, 5, 2
    assert buckets(mask, 3, min_rows=2) == [[1, 4], [0, 3], [2, 5]]
    assert buckets(mask, 4, min_rows=2) == [[1, 4], [0, 3], [2, 5]]  # 6 rows // 2 = at most 3 buckets
    assert buckets(mask, 4, min_rows=4) == [[0, 1, 2, 3, 4, 5]]
    assert buckets(mask, 2, min_rows=1) == [[1, 3, 4], [0, 2, 5]]


def test_trim_drops_columns_that_are_padding_in_every_row():
    s = Samples(
        prompt_ids=torch.tensor([[0, 0, 5, 6], [0, 7, 8, 9]]), prompt_mask=torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]]),
        completion_ids=torch.tensor([[4, 3, 0, 0, 0], [4, 4, 4, 0, 0]]),
        completion_mask=torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]),  # row 1: slot 3 counts, token 0 (pad id)
        texts=["a", "b"], truncated=torch.tensor([False, False]),
    )
    cut, mask = trim(s, s.completion_mask)
    assert cut.prompt_ids.tolist() == [[0, 5, 6], [7, 8, 9]] and cut.prompt_mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert cut.completion_ids.tolist() == [[4, 3, 0, 0], [4, 4, 4, 0]] and mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    # a loss mask that drops row 1 (mask_truncated) lets the cut go further; an empty one keeps 1 slot
    assert trim(s, s.completion_mask * torch.tensor([[1], [0]]))[1].tolist() == [[1, 1], [0, 0]]
    assert trim(s, torch.zeros_like(s.completion_mask))[0].completion_ids.tolist() == [[4], [4]]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("extra", [{}, {"grad_accum": 2, "num_iterations": 2, "mask_truncated": True, "beta": 0.1}])
def test_trimmed_bucketed_update_equals_the_padded_one(policy, batch, loss_type, extra):
    cfg = grpo_cfg(prompts_per_step=4, group_size=2, loss_type=loss_type, epsilon=0.05, **extra)
    pieces = micro_batches([batch], cfg)
    masks = [p.samples.completion_mask * (~p.samples.truncated | (not cfg.mask_truncated)).long()[:, None]
             for p in pieces]
    work = work_items(pieces, masks, cfg, 8, max_buckets=4, min_rows=1)
    full_t = batch.samples.completion_ids.shape[1]
    # precondition: the cut really drops prompt and completion columns and makes several passes
    assert len(work) == 4 * cfg.grad_accum  # 4 buckets of 2 rows, or of 1 row in each 4-row micro-batch
    assert min(c.samples.completion_ids.shape[1] for c in work) < full_t
    ref = copy.deepcopy(policy).eval().requires_grad_(False) if cfg.beta > 0 else None
    if ref is not None:  # a reference that differs from the policy, so kl is not 0
        with torch.no_grad():
            ref.lm_head.bias += 0.3 * torch.arange(ref.lm_head.bias.numel()) / ref.lm_head.bias.numel()

    def run(**kw):
        m = copy.deepcopy(policy)
        before = [p.detach().clone() for p in m.parameters()]
        stats = update(m, ref, [batch], cfg, torch.optim.SGD(m.parameters(), lr=3.0), **kw)
        return [p.detach() - b for p, b in zip(m.parameters(), before)], stats

    padded, s0 = run(max_buckets=1, trim_padding=False)
    cut, s1 = run(max_buckets=4, min_bucket_rows=1)
    assert norm(padded) > 1e-3
    assert_same(cut, padded, atol=1e-6)
    assert s1.keys() == s0.keys()
    for k in s0:
        assert s1[k] == pytest.approx(s0[k], rel=1e-5, abs=1e-7), k
    if cfg.beta > 0:
        assert s0["kl"] > 1e-4


@pytest.fixture
def half_flat(batch) -> Rollout:
    """``batch`` with groups 1 and 3 flat (advantage 0), as all-equal rewards leave them."""
    ro = copy.copy(batch)
    ro.advantages = torch.tensor([1.0, -1.0, 0.0, 0.0, -2.0, 2.0, 0.0, 0.0])
    return ro


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("extra", [{}, {"grad_accum": 2, "num_iterations": 2}])
def test_skipping_zero_advantage_rows_changes_nothing(policy, half_flat, loss_type, extra):
    cfg = grpo_cfg(prompts_per_step=4, group_size=2, loss_type=loss_type, epsilon=0.05, **extra)

    def run(skip: bool):
        m = copy.deepcopy(policy)
        rows_seen = []
        m.register_forward_hook(lambda _m, args, kwargs, out: rows_seen.append(kwargs["input_ids"].shape[0]),
                                with_kwargs=True)
        before = [p.detach().clone() for p in m.parameters()]
        stats = update(m, None, [half_flat], cfg, torch.optim.SGD(m.parameters(), lr=3.0), skip_flat=skip)
        return [p.detach() - b for p, b in zip(m.parameters(), before)], stats, sum(rows_seen)

    full, s_full, n_full = run(False)
    cut, s_cut, n_cut = run(True)
    assert norm(full) > 1e-3
    assert_same(cut, full, atol=1e-6)
    assert s_cut["loss"] == pytest.approx(s_full["loss"], rel=1e-5, abs=1e-7)
    assert n_full == 8 * cfg.num_iterations and n_cut == 4 * cfg.num_iterations  # only the 4 informative rows ran


def test_an_all_flat_batch_still_steps_adam_with_a_zero_gradient(policy, batch, half_flat):
    """Adam moves on a zero gradient (its first moment): skipping every row must not skip the step."""
    cfg = grpo_cfg(prompts_per_step=4, group_size=2)
    flat = copy.copy(batch)
    flat.advantages = torch.zeros(8)

    def run(skip: bool):
        m = copy.deepcopy(policy)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        update(m, None, [half_flat], cfg, opt, skip_flat=skip)
        after_first = [p.detach().clone() for p in m.parameters()]
        stats = update(m, None, [flat], cfg, opt, skip_flat=skip)
        return [p.detach() - a for p, a in zip(m.parameters(), after_first)], stats

    moved_full, s_full = run(False)
    moved_cut, s_cut = run(True)
    assert norm(moved_full) > 1e-4  # precondition: momentum really moves the weights on a zero gradient
    assert_same(moved_cut, moved_full, atol=1e-7)
    assert s_cut["grad_norm"] == s_full["grad_norm"] == 0.0


# ----------------------------------------------------------------------------- 3. num_iterations
def test_num_iterations_reuses_the_first_pass_as_pi_old(policy, batch):
    lr = 3.0
    cfg = grpo_cfg(prompts_per_step=4, group_size=2, num_iterations=2, epsilon=0.05)
    s, adv, mask = batch.samples, batch.advantages, batch.samples.completion_mask
    delta, stats = sgd_delta(policy, [batch], cfg, lr=lr)

    def replay(recompute_old: bool) -> tuple[list[torch.Tensor], dict]:
        m = copy.deepcopy(policy).train()
        before = [p.detach().clone() for p in m.parameters()]
        old = completion_logprobs(m, s).detach()
        for _ in range(2):
            m.zero_grad()
            logp = completion_logprobs(m, s)
            if recompute_old:
                old = logp.detach()
            loss, st = policy_loss(logp, old, adv, mask, epsilon=0.05)
            loss.backward()
            with torch.no_grad():
                for p in m.parameters():
                    p -= lr * p.grad
        return [p.detach() - b for p, b in zip(m.parameters(), before)], st

    expected, last = replay(recompute_old=False)
    assert_same(delta, expected, atol=1e-5)
    wrong, _ = replay(recompute_old=True)  # what a fresh pi_old per iteration would give
    assert max_diff(wrong, expected) > 1e-3
    # Stats are means over both passes; the first pass has ratio 1 and no clipping.
    assert last["ratio_mean"] != pytest.approx(1.0, abs=1e-3)
    assert stats["ratio_mean"] == pytest.approx((1.0 + last["ratio_mean"]) / 2, abs=1e-5)
    assert last["clip_frac"] > 0
    assert stats["clip_frac"] == pytest.approx(last["clip_frac"] / 2, abs=1e-6)
    _, one = sgd_delta(policy, [batch], cfg.model_copy(update={"num_iterations": 1}), lr=lr)
    assert one["ratio_mean"] == 1.0 and one["clip_frac"] == 0.0


@pytest.mark.parametrize(("num_iterations", "grad_accum", "forwards"), [(1, 1, 1), (2, 1, 2), (3, 2, 6)])
def test_update_forwards_are_mu_times_micro_batches(policy, batch, num_iterations, grad_accum, forwards):
    cfg = grpo_cfg(prompts_per_step=4, group_size=2, num_iterations=num_iterations, grad_accum=grad_accum)
    m = copy.deepcopy(policy)
    calls = []
    m.register_forward_hook(lambda *_: calls.append(1))
    update(m, None, [batch], cfg, torch.optim.SGD(m.parameters(), lr=1e-3))
    assert len(calls) == forwards


# ----------------------------------------------------------------------------- 4. mask_truncated
@pytest.fixture(scope="module")
def short(policy, tokenizer, rows, executor) -> Rollout:
    """Completions of at most 3 tokens: some cut off, some ended by EOS."""
    cfg = grpo_cfg(prompts_per_step=6, group_size=2, max_new_tokens=3, overlong_cache=0)
    ro = rollout_of(policy, tokenizer, rows[:3] + rows[6:9], executor, cfg, seed=2)
    n_trunc = int(ro.samples.truncated.sum())
    assert 2 <= n_trunc <= len(ro.samples.texts) - 2, f"precondition: a mix, got {n_trunc} truncated"
    return ro


def test_mask_truncated_drops_every_cut_completion(policy, short):
    idx = [i for i, t in enumerate(short.samples.truncated.tolist()) if t]
    only_cut = hand_rollout(short.samples.select(idx), [short.rows[i // 2] for i in idx],
                            [(-1.0) ** i for i in range(len(idx))])
    cfg = grpo_cfg(prompts_per_step=len(idx), group_size=2, max_new_tokens=3, overlong_cache=0, mask_truncated=True)
    delta, stats = sgd_delta(policy, [only_cut], cfg)
    assert all(bool((d == 0).all()) for d in delta)
    assert stats["grad_norm"] == 0.0 and all(math.isfinite(v) for v in stats.values())
    delta, _ = sgd_delta(policy, [only_cut], cfg.model_copy(update={"mask_truncated": False}))
    assert norm(delta) > 1e-3


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_mask_truncated_removes_cut_rows_and_rescales_nothing_else(policy, short, loss_type):
    n = len(short.samples.texts)
    adv = [(-1.0) ** i * (1 + i / 10) for i in range(n)]
    every = hand_rollout(short.samples, [short.rows[i // 2] for i in range(n)], adv)
    ended = [i for i, t in enumerate(short.samples.truncated.tolist()) if not t]
    cfg = grpo_cfg(prompts_per_step=n, group_size=2, max_new_tokens=3, overlong_cache=0, loss_type=loss_type,
                   mask_truncated=True)
    delta, _ = sgd_delta(policy, [every], cfg)
    # dapo: the same token mean over the completions that ended. grpo: their per-sequence means,
    # still divided by all n rows (a dropped row keeps counting in B).
    grad = loss_grad(policy, short.samples.select(ended), torch.tensor([adv[i] for i in ended]), cfg)
    weight = 1.0 if loss_type == "dapo" else len(ended) / n
    assert_same(delta, [-weight * g for g in grad])
    assert norm(delta) > 1e-3


# ----------------------------------------------------------------------------- 5. dynamic sampling
def draw_from(plan: list[list[dict]]):
    """``draw(k)`` for ``collect`` that hands out the planned rounds in order."""
    rounds = iter(plan)

    def draw(k: int) -> list[dict]:
        out = next(rounds)
        assert len(out) == k
        return out

    return draw


def rounds_dropped_kept(metrics: dict) -> tuple:
    return tuple(metrics[f"sampling/{k}"] for k in ("rounds", "dropped_groups", "kept_groups"))


def test_dynamic_sampling_gives_up_after_max_rounds_of_flat_groups(policy, tokenizer, rows, executor):
    # overlong_cache 0: the length reward is 0 for every completion within budget, so every group is flat
    cfg = grpo_cfg(prompts_per_step=2, group_size=2, overlong_cache=0, dynamic_sampling=True,
                   max_sampling_rounds=3)
    draw = draw_from([rows[0:2], rows[6:8], rows[2:4]])
    kept, seen, metrics = collect(policy, tokenizer, draw, cfg, executor, torch.Generator().manual_seed(3))
    assert kept == [] and len(seen) == 3
    assert rounds_dropped_kept(metrics) == (3, 6, 0)
    assert metrics["zero_std_groups"] == 1.0


def test_train_step_without_informative_groups_updates_only_the_sampler(policy, tokenizer, rows, executor):
    cfg = grpo_cfg(prompts_per_step=2, group_size=2, overlong_cache=0, dynamic_sampling=True,
                   max_sampling_rounds=3, sampler="dump")
    sampler = build_sampler("dump", [r["source"] for r in rows], 0, cfg.curriculum)
    m = copy.deepcopy(policy)
    before = [p.detach().clone() for p in m.parameters()]
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    metrics, _, (kept, seen) = train_step(0, m, None, tokenizer, rows, sampler, cfg, opt, executor,
                                          torch.Generator().manual_seed(4))
    assert kept == [] and len(seen) == 3 and "loss" not in metrics
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before))
    assert sum(st["prompts"] for st in sampler.arm_stats().values()) == 3 * 2
    assert sum(st["rollouts"] for st in sampler.arm_stats().values()) == 3 * 2 * 2


def test_dynamic_sampling_keeps_every_group_when_rewards_always_vary(policy, tokenizer, rows, executor):
    cfg = grpo_cfg({"noise": 1.0}, prompts_per_step=3, group_size=3, dynamic_sampling=True,
                   max_sampling_rounds=3)
    gen = torch.Generator().manual_seed(5)
    kept, seen, metrics = collect(policy, tokenizer, draw_from([rows[0:3]]), cfg, executor, gen)
    assert len(seen) == 1 and len(kept) == 1 and kept[0].n_groups == 3
    assert [r["id"] for r in kept[0].rows] == [r["id"] for r in rows[0:3]]
    assert rounds_dropped_kept(metrics) == (1, 0, 3)


def test_dynamic_sampling_collects_informative_groups_across_rounds(policy, tokenizer, rows, executor):
    add, sub = rows[:6], rows[6:]  # noise_if_add: add_2d groups vary, sub_2d groups are flat
    cfg = grpo_cfg({"noise_if_add": 1.0}, prompts_per_step=2, group_size=2, dynamic_sampling=True,
                   max_sampling_rounds=4)
    plan = [[add[0], sub[0]], [sub[1], sub[2]], [add[1], add[2]], [add[3], add[4]]]
    gen = torch.Generator().manual_seed(6)
    kept, seen, metrics = collect(policy, tokenizer, draw_from(plan), cfg, executor, gen)
    # round 1 gives add[0]; round 2 nothing; round 3 two, of which one is still needed; no round 4
    assert len(seen) == 3
    assert [[r["id"] for r in ro.rows] for ro in kept] == [[add[0]["id"]], [add[1]["id"]]]
    assert rounds_dropped_kept(metrics) == (3, 3, 2)
    # the kept groups carry the advantages computed on their whole round
    assert torch.equal(kept[1].advantages, seen[2].advantages[:2])

    # 8. the completions table: one row per completion seen, kept = the groups trained on
    table = completions_table(seen)
    n = 3 * 2 * 2
    columns = {"prompt", "source", "completion", "reward", "advantage", "kept", "reward/noise_if_add"}
    assert set(table) == columns
    assert all(len(v) == n for v in table.values())
    assert table["completion"] == [t for ro in seen for t in ro.samples.texts]
    assert table["prompt"] == [r["prompt"] for step in plan[:3] for r in step for _ in range(2)]
    expected = [noise_if_add(t, {"source": s}) for t, s in zip(table["completion"], table["source"])]
    assert table["reward/noise_if_add"] == pytest.approx(expected)
    assert table["reward"] == pytest.approx(table["reward/noise_if_add"])
    assert table["kept"] == [g for g in [True, False, False, False, True, False] for _ in range(2)]


def test_completions_table_flags_groups_not_prompts(policy, tokenizer, rows, executor):
    add, sub = rows[:6], rows[6:]
    cfg = grpo_cfg({"noise_if_add": 1.0}, prompts_per_step=2, group_size=2, dynamic_sampling=True,
                   max_sampling_rounds=2)
    # add[0] is informative in both rounds; round 2 needs only one more group, so its second copy is not kept
    plan = [[add[0], sub[0]], [add[0], add[0]]]
    gen = torch.Generator().manual_seed(7)
    kept, seen, _ = collect(policy, tokenizer, draw_from(plan), cfg, executor, gen)
    assert sum(ro.n_groups for ro in kept) == 2
    table = completions_table(seen)
    assert table["kept"] == [g for g in [True, False, True, False] for _ in range(2)]


# ----------------------------------------------------------------------------- 6. length reward
def test_length_reward_scores_the_token_counts(policy, tokenizer, rows, executor):
    cfg = grpo_cfg({"length": 1.0}, prompts_per_step=4, group_size=4, max_new_tokens=8, overlong_cache=4)
    ro = rollout_of(policy, tokenizer, rows[:2] + rows[6:8], executor, cfg, seed=8)
    n = ro.samples.completion_mask.sum(1).tolist()
    # DAPO: 0 up to 8 - 4 = 4 tokens, then linearly down to -1 at 8 tokens
    expected = [0.0 if k <= 4 else (4 - k) / 4 for k in n]
    assert min(n) <= 4 < max(n) and max(n) == 8, f"precondition: lengths on both sides of 4, got {n}"
    assert ro.rewards.tolist() == pytest.approx(expected)
    assert ro.per_reward["length"] == pytest.approx(expected)
    assert ro.metrics["reward/errors"] == 0


# ----------------------------------------------------------------------------- 7. evaluation and the sampler
def test_evaluation_leaves_the_sampler_alone(policy, tokenizer, rows, executor):
    cfg = grpo_cfg({"noise": 1.0}, prompts_per_step=2, group_size=2, sampler="dump", lr=1e-3)
    sampler = build_sampler("dump", [r["source"] for r in rows], 0, cfg.curriculum)
    m = copy.deepcopy(policy)
    opt = torch.optim.AdamW(m.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(9)
    for step in range(2):
        train_step(step, m, None, tokenizer, rows, sampler, cfg, opt, executor, gen)
    state, probs, arms = copy.deepcopy(sampler.state_dict()), sampler.probabilities(), sampler.arm_stats()
    gen_state, global_state = gen.get_state(), torch.get_rng_state()

    eval_rows = [{k: r[k] for k in ROW_KEYS} for f in ("add_2d", "sub_2d") for r in generate_family(f, 3, 1)]
    acc, per = heldout_accuracy(m, tokenizer, eval_rows, executor, 8)
    assert set(per) == {"add_2d", "sub_2d"} and 0.0 <= acc <= 1.0
    assert sampler.state_dict() == state and sampler.probabilities() == probs and sampler.arm_stats() == arms
    assert torch.equal(gen.get_state(), gen_state)  # nor does it draw from the training generator
    assert torch.equal(torch.get_rng_state(), global_state)  # or torch's global stream (grpo.eval_every)

    train_step(2, m, None, tokenizer, rows, sampler, cfg, opt, executor, gen)
    assert sampler.state_dict() != state and sampler.probabilities() != probs


def test_verified_success_is_the_code_reward_on_code_rows():
    """What samplers learn from (``prompt_stats``' accuracy): accuracy on math rows, the code
    reward on code rows (where accuracy does not apply), 0 where neither applies."""
    rows = [{"id": "m", "source": "math"}, {"id": "c", "source": "mbpp"}, {"id": "x", "source": "other"}]
    ro = Rollout(rows, None, torch.zeros(6), torch.zeros(6), {}, 2)
    ro.per_reward = {"accuracy": [1.0, 0.0, None, None, None, None], "code": [None, None, 1.0, 1.0, None, None]}
    assert ro.accuracy() == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert ro.prompt_stats()["accuracy"] == [0.5, 1.0, 0.0]
