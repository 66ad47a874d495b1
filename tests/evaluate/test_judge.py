"""The judges: one contract for the lexical baseline and the LLM judge (logprobs and one-token choice,
on the real SmolLM2), the agreement arithmetic on hand-made tables, and the judge's refusals."""

from __future__ import annotations

import pytest

from appliance.errors import InvalidInput
from appliance.evaluate.judge import (
    AnswerPair,
    Confusion,
    Judge,
    LexicalJudge,
    LLMJudge,
    SupportPair,
    agreement_of,
    confusion_of,
    judge_agreement,
    score_auc,
    yes_probability,
)
from appliance.models.echo import EchoRuntime
from appliance.models.served import ServedModel

PASSAGE = (
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was completed in 1889 as "
    "the entrance arch of the World's Fair and is 330 metres tall."
)
SUPPORTED = "The Eiffel Tower was completed in 1889."
UNRELATED = "Penguins live mostly in the Southern Hemisphere and cannot fly."


class JudgeContract:
    """What every Judge promises. Subclasses provide the `judge` fixture."""

    @pytest.fixture
    def judge(self) -> Judge:
        raise NotImplementedError

    def test_is_a_judge_with_a_name_and_a_threshold(self, judge):
        assert isinstance(judge, Judge)
        assert judge.name and 0.0 < judge.threshold <= 1.0

    @pytest.mark.parametrize(
        "call",
        [
            ("supported", (SUPPORTED, PASSAGE)),
            ("correct", ("When was the Eiffel Tower completed?", "1889", "It was finished in 1889.")),
        ],
    )
    def test_scores_are_probabilities_and_verdicts_follow_them_deterministically(self, judge, call):
        method, args = call
        first = getattr(judge, method)(*args)
        assert isinstance(first.score, float) and 0.0 <= first.score <= 1.0
        assert first.verdict == (first.score >= judge.threshold)
        assert getattr(judge, method)(*args) == first

    def test_a_passage_supports_itself_at_least_as_much_as_an_unrelated_claim(self, judge):
        assert judge.supported(PASSAGE, PASSAGE).score >= judge.supported(UNRELATED, PASSAGE).score

    def test_agreement_over_labelled_pairs_counts_every_pair(self, judge):
        pairs = [
            SupportPair(SUPPORTED, PASSAGE, True),
            SupportPair(UNRELATED, PASSAGE, False),
            AnswerPair("When was it completed?", "1889", "in 1889", True),
        ]
        report = judge_agreement(judge, pairs)
        c = report.confusion
        assert report.n == 3 == c.tp + c.fp + c.fn + c.tn
        assert report.judge == judge.name


class TestLexicalJudge(JudgeContract):
    @pytest.fixture
    def judge(self):
        return LexicalJudge()

    def test_overlap_decides(self, judge):
        assert judge.supported(SUPPORTED, PASSAGE).verdict
        assert not judge.supported(UNRELATED, PASSAGE).verdict
        assert judge.correct("q", "the year 1889", "It opened in 1889, the year of the fair.").score == 1.0
        assert not judge.correct("q", "330 metres", "It is very tall.").verdict


class TestLLMJudgeReadingLogprobsThroughAdmission(JudgeContract):
    @pytest.fixture
    def judge(self, smollm2):
        judge = LLMJudge(ServedModel(smollm2, max_queue=2))
        assert judge.mode == "logprobs"
        return judge

    def test_scores_are_graded_and_rank_a_passage_itself_above_an_unrelated_claim(self, judge):
        itself = judge.supported(PASSAGE, PASSAGE).score
        assert 0.0 < itself < 1.0
        assert itself > judge.supported(UNRELATED, PASSAGE).score


class TestLLMJudgeByOneTokenChoice(JudgeContract):
    @pytest.fixture
    def judge(self, smollm2):
        return LLMJudge(smollm2, mode="choice")

    def test_the_choice_is_all_or_nothing(self, judge):
        assert judge.mode == "choice"
        assert judge.supported(SUPPORTED, PASSAGE).score in (0.0, 1.0)


def test_next_token_logprobs_are_a_distribution_whose_top_is_the_greedy_token(smollm2):
    from appliance.models.runtime import ChatMessage, GenerationParams

    prompt = smollm2.render_chat([ChatMessage("user", "What is the capital of France?")])
    top = smollm2.next_token_logprobs(prompt, 10)
    assert 0 < len(top) <= 10
    probabilities = sorted((__import__("math").exp(v) for v in top.values()), reverse=True)
    assert 0.0 < sum(probabilities) <= 1.0 + 1e-6
    best = max(top, key=top.get)
    greedy = smollm2.generate(prompt, GenerationParams(max_tokens=1, temperature=0.0, seed=1))
    assert greedy.text == best
    with pytest.raises(InvalidInput):
        smollm2.next_token_logprobs(prompt, 0)


def test_a_model_that_can_neither_score_nor_constrain_is_refused():
    with pytest.raises(InvalidInput, match="cannot judge"):
        LLMJudge(EchoRuntime())
    served = ServedModel(EchoRuntime(), max_queue=1)
    assert not served.reports_logprobs
    with pytest.raises(InvalidInput, match="does not report token probabilities"):
        served.next_token_logprobs("<|user|>\nhello\n<|assistant|>\n")
    with pytest.raises(InvalidInput, match="cannot judge"):
        LLMJudge(served)
    with pytest.raises(InvalidInput, match="mode"):
        LLMJudge(EchoRuntime(), mode="guess")


def test_yes_probability_sums_the_forms_of_each_word():
    import math

    logprobs = {"yes": math.log(0.3), " Yes": math.log(0.1), "No": math.log(0.2), "maybe": math.log(0.4)}
    assert yes_probability(logprobs) == pytest.approx(0.4 / 0.6)
    assert yes_probability({"maybe": 0.0}) is None


def test_agreement_and_kappa_of_a_hand_made_table():
    # 50 pairs: observed agreement (20 + 15) / 50 = 0.7; judged yes 25 of 50, labelled yes 30 of 50,
    # so chance agreement is (25*30 + 25*20) / 2500 = 0.5 and kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    observed, kappa = agreement_of(Confusion(tp=20, fp=5, fn=10, tn=15))
    assert observed == pytest.approx(0.7)
    assert kappa == pytest.approx(0.4)
    # Perfect agreement is kappa 1; a judge that always says yes against balanced labels is 0.
    assert agreement_of(Confusion(tp=3, fp=0, fn=0, tn=7)) == (1.0, 1.0)
    assert agreement_of(Confusion(tp=5, fp=5, fn=0, tn=0))[1] == pytest.approx(0.0)
    # One class on both sides: chance agreement is 1 and kappa undefined.
    assert agreement_of(Confusion(tp=4, fp=0, fn=0, tn=0)) == (1.0, None)
    with pytest.raises(InvalidInput):
        agreement_of(Confusion(tp=0, fp=0, fn=0, tn=0))


def test_confusion_and_auc_from_verdicts_scores_and_labels():
    labels = [True, True, False, False, True]
    verdicts = [True, False, True, False, True]
    assert confusion_of(verdicts, labels) == Confusion(tp=2, fp=1, fn=1, tn=1)
    assert score_auc([0.9, 0.8, 0.1, 0.2, 0.7], labels) == 1.0
    assert score_auc([0.1, 0.5, 0.9, 0.5, 0.2], labels) == pytest.approx((0 + 0.5 + 0) / 6)
    assert score_auc([0.5, 0.6], [True, True]) is None


def test_judge_agreement_of_the_lexical_judge_on_labelled_pairs():
    pairs = [
        SupportPair(SUPPORTED, PASSAGE, True),  # judged yes
        SupportPair(UNRELATED, PASSAGE, False),  # judged no
        SupportPair("The tower is in Paris.", PASSAGE, False),  # mislabelled on purpose: judged yes
        AnswerPair("How tall is it?", "330 metres", "It is 330 metres tall.", True),  # judged yes
    ]
    report = judge_agreement(LexicalJudge(), pairs)
    assert report.confusion == Confusion(tp=2, fp=1, fn=0, tn=1)
    assert report.agreement == pytest.approx(0.75)
    assert report.cohen_kappa == pytest.approx(0.5)
