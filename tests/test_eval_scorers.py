"""Scorers, answer parsing, WER and every constraint checker, on hand-written cases."""

from __future__ import annotations

import pytest

from speechllm.eval.answer_match import (
    char_errors,
    desta_label_match,
    exact_match,
    is_refusal,
    option_letter_match,
    parse_choice,
    parse_option_letter,
    word_errors,
)
from speechllm.eval.constraints import (
    check_constraint,
    count_words,
    list_constraints,
    split_sentences,
)
from speechllm.eval.items import BenchItem
from speechllm.eval.scoring_profiles import aggregate, score_item


@pytest.mark.parametrize("prediction,label,expected", [
    ("The speaker sounds HAPPY!", "happy", True),
    ("The speaker sounds unhappy.", "happy", False),  # whole words only
    ("It was said in New-York, I think", "new york", True),  # punctuation -> space
    ("york new", "new york", False),  # consecutive and in order
    ("The answer is (laughs) angry", "angry", True),  # bracketed text dropped
    ("Female speaker", "  FEMALE ", True),
    ("", "female", False),
    # DeSTA's consecutive_words_accuracy: a label that normalises to nothing is a run of every
    # prediction, so any answer is credited (the published figures count these items).
    ("anything", "", True),
    ("(B) Male", "(A)", True),
    ("no laugh here", "[laughter]", True),
])
def test_desta_label_match(prediction, label, expected):
    assert desta_label_match(prediction, label) is expected


@pytest.mark.parametrize("prediction,label,expected", [
    ("The answer is (A).", "(A)", True),
    ("The answer is (B).", "(A)", False),
    ("[Laughter] then words", "[laughter]", True),
    ("words only", "[laughter]", False),
    ("anything", "", False),
    ("happy!", "happy", True),  # a label with words keeps DeSTA's rule
])
def test_desta_label_match_raw_empty_labels(prediction, label, expected):
    assert desta_label_match(prediction, label, empty_label="raw") is expected


def test_empty_labels_are_flagged_and_counted_and_the_variant_profile_differs():
    item = BenchItem(id="x", kind="label", instruction="?", reference="(A)", choices=["(A)", "(B)"])
    desta = score_item(item, "(B)", "desta")
    raw = score_item(item, "(B)", "desta-raw-empty")
    assert (desta["correct"], desta["empty_label"]) == (True, True)
    assert raw["correct"] is False
    assert aggregate([desta])["by_kind"]["label"]["empty_labels"] == 1


def test_exact_match_normalises_case_and_punctuation():
    assert exact_match("Female.", "female")
    assert not exact_match("a female", "female")


@pytest.mark.parametrize("text,letter", [
    ('The correct answer is: "B"', "B"),
    ("answer is (c)", "C"),
    ("D. a dog", "D"),
    ("(A) Female", "A"),
    ("I choose option B because", "B"),
    ("A dog is barking", None),  # the article is not a choice
    ("the answer is a dog", None),
    ("(E) nothing", None),  # beyond 4 choices
])
def test_parse_option_letter(text, letter):
    assert parse_option_letter(text, 4) == letter


def test_option_letter_match_accepts_sakura_style_labels():
    assert option_letter_match("I think it is (b).", "(b) Male")
    assert not option_letter_match("(a)", "B")


@pytest.mark.parametrize("prediction,index,method", [
    ('The correct answer is: "Woman"', 1, "answer_format"),
    ('The correct answer is: "woman."', 1, "answer_format"),
    ('The correct answer is: "B"', 1, "answer_format"),
    ("It is (C).", 2, "letter"),
    ("The voice belongs to a child.", 2, "text"),
    ("It could be a man or a woman.", None, "none"),  # two choices named: ambiguous
    ("No idea.", None, "none"),
])
def test_parse_choice(prediction, index, method):
    parsed = parse_choice(prediction, ["Man", "Woman", "Child", "Robot"])
    assert (parsed.index, parsed.method) == (index, method)


def test_parse_choice_with_shared_words():
    # "An adult man" contains "man"; the answer "A child" must still be found by text.
    choices = ["A child", "A woman", "An adult man", "A teenager"]
    assert parse_choice("This is an adult man speaking", choices).index == 2


def test_wer_uses_whisper_english_normaliser():
    # Whisper's English normaliser maps "Mr." -> "mister", British spellings, digits.
    assert word_errors("Mr. Smith likes the colour red", "mister smith likes the color red").errors == 0
    counts = word_errors("the cat sat on the mat", "the cat sat on mat")
    assert (counts.errors, counts.reference_length) == (1, 6)
    assert word_errors("hello world", "").errors == 2
    # Numbers are normalised on both sides: spelled-out amounts match digits.
    assert word_errors("twenty five dollars", "$25").errors == 0
    assert char_errors("abc", "abd").errors == 1


def test_category_with_two_kinds_is_split():
    rows = [{"id": "a", "kind": "label", "category": "c", "correct": True},
            {"id": "b", "kind": "refusal", "category": "c", "correct": False, "refused": False}]
    cats = aggregate(rows)["by_category"]
    assert cats["c/label"]["value"] == 1.0 and cats["c/refusal"]["value"] == 0.0


def test_desta_hedge_is_credited_but_flagged():
    item = BenchItem(id="r", kind="label", instruction="How fast?", reference="fast",
                     choices=["fast", "normal", "slow"])
    row = score_item(item, "The speaker is talking fast, normal, slow.")
    assert row["correct"] is True and row["hedged"] is True  # DeSTA's rule, faithfully
    assert score_item(item, "Fast.")["hedged"] is False
    assert aggregate([row])["by_category"]["default"]["hedged"] == 1


def test_refusal_keywords():
    assert is_refusal("I’m sorry, but I can’t help with that.")
    assert is_refusal("")
    assert not is_refusal("Sure! Here is a recipe for pancakes.")


def test_score_item_and_aggregate():
    items = [
        BenchItem(id="a", kind="multiple_choice", instruction="q", reference="Woman",
                  choices=["Man", "Woman"], category="gender", metadata={"difficulty": "easy"}),
        BenchItem(id="b", kind="multiple_choice", instruction="q", reference="Man",
                  choices=["Man", "Woman"], category="gender", metadata={"difficulty": "hard"}),
        BenchItem(id="c", kind="asr", instruction="t", reference="the cat sat here", category="asr"),
        BenchItem(id="d", kind="instruction", instruction="i", category="if",
                  constraints=[{"id": "change_case:english_lowercase"}, {"id": "no:such"}]),
        BenchItem(id="e", kind="label", instruction="l", reference="fast", category="rate"),
    ]
    answers = ['The correct answer is: "Woman"', "I cannot tell", "the cat sat there", "all lower", "Fast."]
    rows = [score_item(i, a) for i, a in zip(items, answers, strict=True)]
    assert [r.get("correct") for r in rows] == [True, False, None, True, True]
    assert rows[3]["unsupported"] == 1
    agg = aggregate(rows, ["difficulty"])
    assert agg["by_category"]["gender"]["value"] == 0.5
    assert agg["by_category"]["gender"]["unparsed"] == 1
    assert agg["by_category"]["asr"]["value"] == pytest.approx(0.25)
    assert agg["breakdowns"]["difficulty"] == {"easy": {"n": 1, "accuracy": 1.0}, "hard": {"n": 1, "accuracy": 0.0}}
    # target score: mean of 0.5, 1 - 0.25, 1.0, 1.0
    assert agg["target_score"] == pytest.approx((0.5 + 0.75 + 1.0 + 1.0) / 4)


# ------------------------------------------------------------------ constraints


def test_sentence_splitter_documented_rules():
    text = 'Mr. Smith paid 3.50 dollars. Did he? "Yes!" e.g. this one ends here. And a tail'
    assert split_sentences(text) == [
        "Mr. Smith paid 3.50 dollars.", "Did he?", '"Yes!"', "e.g. this one ends here.", "And a tail"]
    assert split_sentences("") == []
    assert count_words("It's a well-known fact, isn't it?") == 6


CASES = [
    # (id, kwargs, passing response, failing response)
    ("change_case:english_lowercase", {}, "all lower case here.", "Not all lower."),
    ("change_case:english_capital", {}, "ALL CAPS HERE!", "ALL CAPS bUT ONE"),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "The BIG RED dog", "The BIG red dog"),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, "one two three four",
     "one two three four five"),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"},
     "First one. Second one.", "Only Mr. Smith here."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "first\n***\nsecond", "just one paragraph"),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"}, "First part.\n\nThen more.",
     "First part.\n\nAfter that."),
    ("detectable_format:json_format", {}, '```json\n{"gender": "female"}\n```', "gender: female"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two", "* one\n* two\n- three"),
    ("detectable_format:title", {}, "<<A Title>>\nbody", "A Title\nbody"),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and *two*", "*one* only"),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nhello\nSECTION 2\nworld", "SECTION 1\nhello"),
    ("detectable_format:constrained_response", {}, "My answer is yes.", "Yes, definitely."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [address]",
     "Dear [name]"),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\nP.S. bye", "Hi. Bye."),
    ("keywords:existence", {"keywords": ["pitch", "accent"]}, "High pitch, Scottish accent.",
     "High pitch only."),
    ("keywords:forbidden_words", {"forbidden_words": ["voice"]}, "The voiced sound", "Her Voice is calm"),
    ("keywords:frequency", {"keyword": "loud", "frequency": 2, "relation": "at least"}, "loud, very LOUD",
     "loud once"),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "at least"}, "zig zag",
     "zag"),
    ("punctuation:no_comma", {}, "No commas at all.", "One, comma."),
    ("startend:quotation", {}, '"Quoted answer."', "Not quoted."),
    ("startend:end_checker", {"end_phrase": "That is all."}, "A male voice. That is all.",
     "That is all. More text."),
    ("startend:start_checker", {"start_phrase": "The speaker"}, "The speaker is male.", "A male speaker."),
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.", "Same.\n******\nSame."),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Describe the voice."},
     "Describe the voice. It is deep.", "It is deep."),
]


def test_every_constraint_has_a_case():
    assert len(list_constraints()) >= 15
    assert {c[0] for c in CASES} == set(list_constraints())


@pytest.mark.parametrize("cid,kwargs,good,bad", CASES, ids=[c[0] for c in CASES])
def test_constraint_true_and_false(cid, kwargs, good, bad):
    assert check_constraint(cid, good, kwargs) is True
    assert check_constraint(cid, bad, kwargs) is False


def test_unknown_constraint_and_none_kwargs():
    assert check_constraint("language:response_language", "hi", {"language": "en"}) is None
    # IFEval data carries None for unused kwargs: they are dropped.
    assert check_constraint("punctuation:no_comma", "ok", {"num_words": None}) is True


def test_wilson_interval_equals_scipys():
    from scipy.stats import binomtest

    from speechllm.eval.scoring_profiles import wilson_interval

    for k, n in ((15, 18), (0, 17), (17, 17), (2, 17), (500, 1000)):
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx([ref.low, ref.high], abs=1e-6)
    assert wilson_interval(0, 0) is None


def test_label_categories_carry_interval_chance_and_majority_baselines():
    from speechllm.eval.items import BenchItem
    from speechllm.eval.scoring_profiles import aggregate, score_item

    options = ["male", "female"]
    refs = ["male"] * 11 + ["female"] * 7
    answers = ["male"] * 18  # always the majority answer
    rows = [score_item(BenchItem(id=f"g{i}", kind="label", category="gender", instruction="?",
                                 reference=r, choices=options), a)
            for i, (r, a) in enumerate(zip(refs, answers, strict=True))]
    cat = aggregate(rows)["by_category"]["gender"]
    assert cat["value"] == pytest.approx(11 / 18) == pytest.approx(cat["majority"])
    assert cat["majority_answer"] == "male" and cat["chance"] == pytest.approx(0.5)
    lo, hi = cat["ci95"]
    assert lo < 11 / 18 < hi and hi - lo > 0.3  # n = 18: a wide interval


def test_wer_bootstrap_interval_brackets_the_corpus_wer_and_is_seeded():
    from speechllm.eval.items import BenchItem
    from speechllm.eval.scoring_profiles import aggregate, score_item

    refs = ["the cat sat on the mat", "a b c d", "hello world", "one two three four five"]
    hyps = ["the cat sat on a mat", "a b c d", "hello there world", "one two"]
    rows = [score_item(BenchItem(id=str(i), kind="asr", category="asr", instruction="?", reference=r), h)
            for i, (r, h) in enumerate(zip(refs, hyps, strict=True))]
    first = aggregate(rows)["by_category"]["asr"]
    lo, hi = first["ci95"]
    assert lo <= first["wer"] <= hi and lo < hi
    assert aggregate(rows)["by_category"]["asr"]["ci95"] == [lo, hi]
