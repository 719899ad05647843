"""How many SFT traces ``sft.max_length`` cuts, per source, with a byte-level BPE tokenizer.

    python benchmarks/truncation.py      # writes benchmarks/results/truncation.json

A trace is what SFT trains on (tasks/sft.py ``encode_example``): the rendered prompt (a ChatML
template with the default system prompt, as a Qwen-style chat model gets it) + the worked solution
+ eos. GSM8K traces come from the real adapter (tasks/data/gsm8k.py); MATH traces are
``<think>solution</think><answer>boxed answer</answer>`` (no MATH adapter exists yet).

No hub tokenizer can be downloaded here, so the tokenizer is a byte-level BPE trained with the
``tokenizers`` library on the *other* half of each data set (rows are split by index parity, so no
measured row was seen in training) at 32k and 8k merges-vocabularies; a large general-purpose
vocabulary (Qwen2.5: 151k) spends on code and other languages what an in-domain 32k spends on
maths, so the two sizes bracket it. Reports, per source, the share of traces over each length and
the length percentiles.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from model_families import QWEN_TEMPLATE, bpe_tokenizer  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from tasks.data.gsm8k import to_row  # noqa: E402
from tasks.models import render_prompt  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
LENGTHS = (256, 384, 512, 768, 1024)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def boxed(solution: str) -> str:
    """The content of the last ``\\boxed{...}`` (braces balanced), or ''."""
    i = solution.rfind("\\boxed{")
    if i < 0:
        return ""
    depth, start = 0, i + len("\\boxed{")
    for j in range(start, len(solution)):
        depth += {"{": 1, "}": -1}.get(solution[j], 0)
        if depth < 0:
            return solution[start:j]
    return ""


def traces() -> dict[str, list[tuple[str, str]]]:
    gsm = [to_row(json.loads(x)) for x in (DATA / "gsm8k/train.jsonl").read_text().splitlines()]
    math = [json.loads(x) for x in (DATA / "math/train.jsonl").read_text().splitlines()]
    return {
        "gsm8k": [(r["prompt"], r["solution"]) for r in gsm if r],
        "math": [
            (m["problem"], f"<think>{m['solution']}</think><answer>{boxed(m['solution'])}</answer>")
            for m in math
        ],
    }


def measure(vocab: int, data: dict[str, list[tuple[str, str]]]) -> dict:
    train = [p + "\n" + s for rows in data.values() for k, (p, s) in enumerate(rows) if k % 2 == 0]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe_tokenizer(train, SPECIALS, vocab), eos_token="<|im_end|>"
    )
    tok.chat_template = QWEN_TEMPLATE
    out = {}
    for src, rows in data.items():
        held = [(p, s) for k, (p, s) in enumerate(rows) if k % 2 == 1]
        n = np.array(
            [len(tok(render_prompt(tok, p) + s, add_special_tokens=False).input_ids) + 1 for p, s in held]
        )
        out[src] = {
            "traces": int(len(n)),
            "share_over": {str(m): round(float((n > m).mean()), 4) for m in LENGTHS},
            "percentiles": {f"p{q}": int(np.percentile(n, q)) for q in (50, 90, 95, 99)},
            "chars_per_token": round(
                sum(len(re.sub(r"\s", " ", p + s)) for p, s in held) / float(n.sum()), 2
            ),
        }
    return out


def main() -> int:
    data = traces()
    results = {f"bpe_{v // 1000}k": measure(v, data) for v in (32000, 8000)}
    path = ROOT / "benchmarks/results/truncation.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    for name, res in results.items():
        for src, r in res.items():
            print(
                f"{name} {src:6s} n={r['traces']}: over "
                + " ".join(f"{k}: {v:.1%}" for k, v in r["share_over"].items())
                + f" | {r['percentiles']} | {r['chars_per_token']} chars/token"
            )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
