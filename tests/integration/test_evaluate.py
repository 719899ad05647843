"""The evaluation harness on a tiny model: same seed -> identical metrics; and the registry gate on
a real MLflow store: a worse challenger leaves the champion, a better one replaces it, one under a
different spec is refused, and ``models:/<name>@champion`` loads and generates."""

import json

import numpy as np
import pytest
from mlflow import MlflowClient

from tasks.config import EvaluateConfig, ModelConfig, TinyModel
from tasks.data.synthetic import generate_family
from tasks.evaluation import gate
from tasks.evaluation.harness import heldout_accuracy, run_model
from tasks.evaluation.summary import summarise
from tasks.generation import sample
from tasks.metrics import paired_bootstrap_diff
from tasks.models import build_tiny, load_model, load_tokenizer
from tasks.rewards.executor import RewardExecutor

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = TinyModel(
    hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(build_tiny(ModelConfig(tiny=TINY), tmp_path_factory.mktemp("m") / "tiny"))


def test_same_seed_gives_identical_metrics_and_streams_every_sample(tiny_dir, tmp_path):
    rows = generate_family("add_2d", 6, 0) + generate_family("sub_2d", 6, 0)
    cfg = EvaluateConfig(n_samples=3, ks=[1, 3], max_new_tokens=12, batch_size=8, bootstrap_samples=200)
    tok, model = load_tokenizer(tiny_dir), load_model(tiny_dir).eval()
    sources = np.array([r["source"] for r in rows])
    with RewardExecutor(1, 5.0) as ex:
        runs = [run_model("m", model, tok, rows, cfg, ex, tmp_path / f"{i}.jsonl") for i in range(2)]
        greedy_acc, _ = heldout_accuracy(model, tok, rows, ex, cfg.max_new_tokens)
    a, b = (summarise(ev, sources, cfg.ks, 200, cfg.seed) for ev in runs)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert (tmp_path / "0.jsonl").read_bytes() == (tmp_path / "1.jsonl").read_bytes()
    lines = [json.loads(x) for x in (tmp_path / "0.jsonl").read_text().splitlines()]
    assert len(lines) == len(rows) * (1 + 3)  # one greedy + n sampled per item, all on disk
    assert {"prompt", "completion", "extracted", "verdict"} <= set(lines[0])
    assert a["accuracy"] == greedy_acc  # the in-training harness is the same greedy pass
    # a different sampling seed changes the sampled pass only
    with RewardExecutor(1, 5.0) as ex:
        other = run_model("m", model, tok, rows, cfg.model_copy(update={"seed": 5}), ex, tmp_path / "o.jsonl")
    assert np.array_equal(other.correct, runs[0].correct) and np.array_equal(other.lengths, runs[0].lengths)
    greedy = [x["completion"] for x in lines if x["kind"] == "greedy"]
    assert greedy == [
        x["completion"]
        for x in map(json.loads, (tmp_path / "o.jsonl").read_text().splitlines())
        if x["kind"] == "greedy"
    ]


SPEC = {"data": [{"label": "heldout", "md5": "d41d8"}], "prompt": {"rendering": "r", "chat_template": None}}


def verdicts(p: float, n: int = 200, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(float)


@pytest.mark.slow
def test_gate_keeps_replaces_and_refuses_on_a_real_registry(tiny_dir, tmp_path):
    uri, name = f"sqlite:///{tmp_path / 'mlflow.db'}", "policy"
    client = MlflowClient(uri)
    exp = client.create_experiment("gate", artifact_location=(tmp_path / "art").as_uri())
    sources = np.array(["x"] * 200)

    def challenge(mine: np.ndarray, theirs: np.ndarray, against: str, spec=SPEC) -> tuple[str, dict]:
        diff = paired_bootstrap_diff(mine, theirs, sources, 500, 0)
        decision = gate.decide({"spec": spec}, {"spec": SPEC}, against, diff, 0.02)
        run = client.create_run(exp)
        tags = {**gate.decision_tags(decision, diff, 0.02), "eval.spec_hash": "h"}
        return gate.register(uri, name, run.info.run_id, tiny_dir, tags, decision["promote"]), decision

    def alias(a: str) -> str:
        return str(client.get_model_version_by_alias(name, a).version)

    sft, v1_acc = verdicts(0.3, seed=1), verdicts(0.6, seed=2)
    v1, d1 = challenge(v1_acc, sft, "sft")  # no champion yet: against SFT
    assert d1["decision"] == "promoted" and alias("champion") == v1
    v2, d2 = challenge(np.clip(v1_acc - verdicts(0.3, seed=3), 0, 1), v1_acc, "champion")  # worse
    assert d2["decision"] == "kept" and alias("champion") == v1 and alias("challenger") == v2
    tags = client.get_model_version(name, v2).tags
    assert tags["gate.decision"] == "kept" and "not above the margin 0.02" in tags["gate.reason"]
    v3, d3 = challenge(np.ones(200), v1_acc, "champion", {**SPEC, "prompt": {"rendering": "other"}})
    assert d3["decision"] == "refused" and alias("champion") == v1
    assert "prompt.rendering" in client.get_model_version(name, v3).tags["gate.reason"]
    v4, d4 = challenge(np.ones(200), v1_acc, "champion")  # better, same spec
    assert d4["decision"] == "promoted" and alias("champion") == v4

    assert str(gate.champion_version(uri, name).version) == v4
    folder = gate.download_champion(uri, name, tmp_path / "champ")
    tok, model = load_tokenizer(folder), load_model(folder)
    out = sample(model, tok, ["12+34="], 1, 6, greedy=True)
    assert out.completion_mask.sum() >= 1
    ref = sample(load_model(tiny_dir), load_tokenizer(tiny_dir), ["12+34="], 1, 6, greedy=True)
    assert out.texts == ref.texts  # the champion is the registered weights, generating
