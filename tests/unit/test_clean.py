"""Cleaning on hand-made rows: normalisation, dedup and decontamination counts."""

from tasks.data.clean import clean_splits, decontaminate, exact_dedup, ngrams, normalise


def row(prompt: str, source: str = "s", answer: str = "1", solution: str | None = None) -> dict:
    return {
        "id": prompt,
        "source": source,
        "prompt": prompt,
        "answer": answer,
        "difficulty": 1,
        "solution": solution,
    }


LONG = "A farmer has twelve cows and each cow gives three litres of milk every single morning before dawn"
# 13 consecutive words of LONG, in a different case and punctuation, inside another question
LONG_COPY = (
    "Question: a FARMER has twelve cows, and each cow gives three litres of milk every single day. Find x."
)


def test_normalise():
    r = normalise(row("  １２ ＋\t 3   =  \n next  line ", answer=" 15 ", solution=" <think>x</think> "))
    assert r["prompt"] == "12 + 3 =\n next line"  # NFKC, spaces/tabs collapsed, newline kept
    assert r["answer"] == "15" and r["solution"] == "<think>x</think>"
    assert r["difficulty"] == 1 and r["id"] != r["prompt"]  # other fields untouched (id is the raw text)


def test_normalise_keeps_none_solution():
    assert normalise(row("1+1=", solution=None))["solution"] is None


def test_exact_dedup_keys_on_normalised_prompt():
    rows = [row("1+1="), row(" 1+1= "), row("１+1="), row("2+2="), row("1 +  1="), row("1 + 1=")]
    kept, n = exact_dedup(rows)
    assert n == 3
    assert [r["id"] for r in kept] == ["1+1=", "2+2=", "1 +  1="]  # first occurrence wins


def test_ngrams():
    assert ngrams("a b c", n=2) == {("a", "b"), ("b", "c")}
    assert ngrams("A, b! c", n=3) == {("a", "b", "c")}
    assert ngrams("a b", n=3) == set()


def test_decontaminate_exact_and_13gram():
    eval_rows = [row("12+7="), row(LONG)]
    train = [
        row("12+7="),  # exact copy of an eval prompt
        row(" 12+7= "),  # copy after normalisation
        row("12+8="),  # different problem
        row(LONG_COPY),  # long, shares a 13-gram with LONG
        row(" ".join(LONG.split()[:12]) + " goats and more words here"),  # long, shares only 12 words
    ]
    kept, n = decontaminate(train, eval_rows)
    assert n == 3
    assert [r["prompt"] for r in kept] == ["12+8=", train[4]["prompt"]]


def test_short_prompts_use_exact_match_only():
    words = " ".join("abcdefghijklm")  # 13 one-letter words, 25 characters
    kept, n = decontaminate([row(words)], [row(words + " n")])
    assert n == 0 and len(kept) == 1


def test_clean_splits_report():
    splits = {
        "eval": [row("1+1=", "a"), row("1+1= ", "a"), row(LONG, "b")],
        "sft": [
            row("1+1=", "a", solution="<think></think><answer>2</answer>"),
            row("2+2=", "a"),
            row("2+2=", "a"),
        ],
        "rl": [row("3+3=", "a"), row(LONG_COPY, "b"), row("4+4=", "b"), row("4+4=", "b"), row("5+5=", "b")],
    }
    out, report = clean_splits(splits, bad_rows={"gsm8k": 2, "synthetic": 0})
    assert report == {
        "filters": {
            "dedup": {"sft": 1, "rl": 1, "eval": 1},
            "near_dup": {"sft": 0, "rl": 0, "eval": 0},
            "decontam": {"sft": 1, "rl": 1, "eval": 0},
            "bad_rows": {"gsm8k": 2, "synthetic": 0},
        },
        "by_source": {"dedup": {"a": 2, "b": 1}, "near_dup": {}, "decontam": {"a": 1, "b": 1}},
        "counts": {"sft": {"a": 1}, "rl": {"a": 1, "b": 2}, "eval": {"a": 1, "b": 1}},
        "decontam_pairs": [
            {"id": "1+1=", "source": "a", "item": "eval:1+1=", "split": "sft"},
            {"id": LONG_COPY, "source": "b", "item": f"eval:{LONG}", "split": "rl"},
        ],
        "near_dup_pairs": [],
    }
    assert [r["prompt"] for r in out["rl"]] == ["3+3=", "4+4=", "5+5="]
    assert [r["prompt"] for r in out["eval"]] == ["1+1=", LONG]


def test_benchmark_files_decontaminate_with_pairs_and_configurable_ngram():
    from tasks.config.curate import DecontamConfig

    splits = {
        "eval": [],
        "sft": [],
        "rl": [row(LONG_COPY, "b"), row("7+7=", "a"), row(("unrelated words " * 8).strip(), "b")],
    }
    bench = [("aime.jsonl:4", LONG), ("gsm_test.jsonl:9", "7+7=")]
    out, report = clean_splits(splits, None, None, DecontamConfig(), bench)
    assert [r["prompt"] for r in out["rl"]] == [("unrelated words " * 8).strip()]
    assert [(p["id"], p["item"]) for p in report["decontam_pairs"]] == [
        (LONG_COPY, "aime.jsonl:4"),
        ("7+7=", "gsm_test.jsonl:9"),
    ]
    # with 16-grams the 13-word overlap is no longer a match; the exact short prompt still is
    out, report = clean_splits(splits, None, None, DecontamConfig(ngram=16), bench)
    assert [p["item"] for p in report["decontam_pairs"]] == ["gsm_test.jsonl:9"]


QUESTION = (
    "Janet has seventeen ducks that lay eggs every morning and she eats three for breakfast and bakes "
    "muffins with four more each day so how many eggs remain for the market"
)


def test_near_dup_within_and_across_splits_eval_wins():
    from tasks.config.curate import NearDupConfig

    near = QUESTION.replace("market", "farmers market")  # one word added: Jaccard ~0.9
    splits = {
        "eval": [row(near, "e")],
        "sft": [row(QUESTION, "a")],  # collides with eval: removed, eval kept
        "rl": [
            row(
                "A train leaves the station at nine and travels sixty miles per hour for three hours how far",
                "b",
            ),
            row(
                "A train leaves the station at nine and travels sixty miles per hour for three hours how far?!",
                "b",
            ),
            row("1+1=", "c"),
            row("1+2=", "c"),
        ],  # short prompts are left to exact dedup
    }
    out, report = clean_splits(splits, None, NearDupConfig())
    assert [r["source"] for r in out["eval"]] == ["e"] and out["sft"] == []
    assert [r["prompt"] for r in out["rl"]][1:] == ["1+1=", "1+2="] and len(out["rl"]) == 3
    # across splits (sft vs eval) and within rl (the same words, other punctuation: not an exact dup)
    assert report["filters"]["near_dup"] == {"sft": 1, "rl": 1, "eval": 0}
    assert report["filters"]["dedup"]["rl"] == 0
    assert report["near_dup_pairs"][0]["kept_id"] == near and report["near_dup_pairs"][0]["jaccard"] >= 0.8
    off = clean_splits(splits, None, NearDupConfig(enabled=False))[0]
    assert len(off["rl"]) == 4  # near-dup off: the punctuation variant stays


def test_near_dup_keeps_distinct_questions():
    from tasks.data.neardup import bands_for, near_dup_filter

    assert 1 <= bands_for(0.8, 128) <= 128 and 128 % bands_for(0.8, 128) == 0
    rows = [row(f"{QUESTION} {w}", "a") for w in ("today", "tonight")]  # one last word differs
    distinct = [
        row(f"Completely different question {i} about " + " ".join(f"w{i}{j}" for j in range(20)), "a")
        for i in range(50)
    ]
    out, removed, _ = near_dup_filter({"eval": [], "sft": [], "rl": distinct + rows})
    assert len(out["rl"]) == 51 and sum(removed["rl"].values()) == 1
