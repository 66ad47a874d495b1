"""The local judge: pointwise yes/no judgments read from a model's next-token probabilities, or a lexical baseline.

A judgment is never parsed out of free-form text. The LLM judge asks a yes/no question and reads the
probability of "yes" against "no" from the model's next-token log-probabilities where the runtime
reports them (llama.cpp), else lets the model write one token under the grammar `root ::= "yes" | "no"`
(then the score is 0 or 1). `judge_agreement` measures a judge against labelled pairs, so a user knows
how far to trust it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec

from appliance.errors import InvalidInput
from appliance.evaluate.normalize import contains_answer, content_tokens, truncate_to_tokens
from appliance.models.grammar import Grammar
from appliance.models.runtime import ChatMessage, GenerationParams

if TYPE_CHECKING:
    from appliance.models.runtime import LLMRuntime

MODES = ("logprobs", "choice")
# Either case: a small model's own first token is "Yes" or "No" far more often than the lower case.
YES_NO = Grammar('root ::= [Yy] "es" | [Nn] "o"', "choice")
TOP_LOGPROBS = 20
# Room for the instructions, the question and the template around a passage.
PROMPT_OVERHEAD_TOKENS = 256

JUDGE_SYSTEM = "You are a careful grader. Reply with one word: yes or no."
CORRECT_PROMPT = (
    "Question: {question}\n"
    "Reference answer: {gold}\n"
    "Proposed answer: {answer}\n\n"
    "Does the proposed answer give the reference answer to the question? Reply yes or no."
)
SUPPORTED_PROMPT = (
    "Passage:\n{passage}\n\n"
    "Statement: {sentence}\n\n"
    "Is the statement supported by the passage? Reply yes or no."
)


@dataclass(frozen=True, slots=True)
class Judgment:
    verdict: bool
    score: float  # P(yes) normalised over yes and no: verdict is score >= the judge's threshold


@runtime_checkable
class Judge(Protocol):
    """Pointwise yes/no judgments; deterministic for the same inputs."""

    name: str
    threshold: float

    def correct(self, question: str, gold_answer: str, answer: str) -> Judgment:
        """Does `answer` give `gold_answer` to `question`?"""
        ...

    def supported(self, sentence: str, passage: str) -> Judgment:
        """Does `passage` support `sentence`?"""
        ...


def _judgment(score: float, threshold: float) -> Judgment:
    score = min(1.0, max(0.0, score))
    return Judgment(verdict=score >= threshold, score=score)


class LexicalJudge:
    """The fast baseline: token overlap, no model.

    `correct`: 1 when the gold answer is in the answer (normalised as SQuAD does), else the share of the
    gold answer's content words the answer contains. `supported`: the share of the sentence's content
    words found in the passage.
    """

    name = "lexical"

    def __init__(self, threshold: float = 0.6) -> None:
        if not 0.0 < threshold <= 1.0:
            raise InvalidInput("threshold must be in (0, 1]", param="threshold")
        self.threshold = threshold

    def correct(self, question: str, gold_answer: str, answer: str) -> Judgment:
        if contains_answer(answer, gold_answer):
            return _judgment(1.0, self.threshold)
        return _judgment(_coverage(content_tokens(gold_answer), content_tokens(answer)), self.threshold)

    def supported(self, sentence: str, passage: str) -> Judgment:
        return _judgment(_coverage(content_tokens(sentence), content_tokens(passage)), self.threshold)


def _coverage(wanted: list[str], found: list[str]) -> float:
    if not wanted:
        return 0.0
    have = set(found)
    return sum(t in have for t in wanted) / len(wanted)


class LLMJudge:
    """A chat model as a yes/no judge (`runtime`: a ServedModel or a bare LLMRuntime).

    `mode` is "logprobs" when the runtime reports next-token log-probabilities (`next_token_logprobs`):
    the score is P(yes) / (P(yes) + P(no)), summing the forms of each word ("yes", " Yes", ...) among
    the likeliest tokens. Otherwise "choice": one token under a yes/no grammar, greedy, score 1 or 0.
    A model that can do neither is refused.
    """

    def __init__(
        self,
        runtime: LLMRuntime,
        threshold: float = 0.5,
        mode: str | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise InvalidInput("threshold must be in (0, 1]", param="threshold")
        if mode not in (None, *MODES):
            raise InvalidInput(
                f"unknown judge mode {mode!r}; expected one of {', '.join(MODES)}", param="mode"
            )
        self.runtime = runtime
        self.threshold = threshold
        self.cancel = cancel
        self.name = f"llm:{runtime.name}"
        scorer = getattr(runtime, "next_token_logprobs", None)
        can_score = callable(scorer) and getattr(runtime, "reports_logprobs", True)
        if mode is None:
            mode = "logprobs" if can_score else "choice"
        if (mode == "logprobs" and not can_score) or (mode == "choice" and not runtime.constrained_decoding):
            raise InvalidInput(
                f"{runtime.name} ({runtime.backend}) can neither report token probabilities nor constrain "
                "its output to yes or no: it cannot judge"
                if not can_score and not runtime.constrained_decoding
                else f"{runtime.name} ({runtime.backend}) cannot judge in mode {mode!r}",
                param="model",
            )
        self.mode = mode

    def correct(self, question: str, gold_answer: str, answer: str) -> Judgment:
        user = CORRECT_PROMPT.format(
            question=question.strip(), gold=gold_answer.strip(), answer=answer.strip()
        )
        return self._ask(user)

    def supported(self, sentence: str, passage: str) -> Judgment:
        room = self.runtime.context_length - PROMPT_OVERHEAD_TOKENS - self.runtime.count_tokens(sentence)
        if room < 16:
            raise InvalidInput("the sentence leaves no room for its passage in the model's context")
        passage = truncate_to_tokens(passage.strip(), self.runtime.count_tokens, room)
        return self._ask(SUPPORTED_PROMPT.format(passage=passage, sentence=sentence.strip()))

    def _ask(self, user: str) -> Judgment:
        prompt = self.runtime.render_chat([ChatMessage("system", JUDGE_SYSTEM), ChatMessage("user", user)])
        if self.mode == "logprobs":
            score = yes_probability(self.runtime.next_token_logprobs(prompt, TOP_LOGPROBS))
            if score is not None:
                return _judgment(score, self.threshold)
            # Neither word among the likeliest tokens: let the grammar force the choice instead.
            if not self.runtime.constrained_decoding:
                return _judgment(0.0, self.threshold)
        params = GenerationParams(max_tokens=2, temperature=0.0, seed=0, grammar=YES_NO)
        text = self.runtime.generate(prompt, params, self.cancel).text.strip().lower()
        return _judgment(1.0 if text == "yes" else 0.0, self.threshold)


def yes_probability(logprobs: dict[str, float]) -> float | None:
    """P(yes) / (P(yes) + P(no)) over next-token log-probabilities, each word's forms summed
    ("yes", "Yes", " yes", ...); None when neither word is among them."""
    mass = {"yes": 0.0, "no": 0.0}
    for text, logprob in logprobs.items():
        word = text.strip().lower()
        if word in mass:
            mass[word] += math.exp(logprob)
    total = mass["yes"] + mass["no"]
    return mass["yes"] / total if total > 0 else None


# -- agreement with labels -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SupportPair:
    """A labelled `supported` question: does `passage` support `sentence`?"""

    sentence: str
    passage: str
    label: bool


@dataclass(frozen=True, slots=True)
class AnswerPair:
    """A labelled `correct` question: does `answer` give `gold_answer` to `question`?"""

    question: str
    gold_answer: str
    answer: str
    label: bool


class Confusion(msgspec.Struct, frozen=True, kw_only=True):
    """The 2x2 table of a judge's verdicts (predicted) against the labels (true)."""

    tp: int  # label yes, judged yes
    fp: int  # label no, judged yes
    fn: int  # label yes, judged no
    tn: int  # label no, judged no


class Agreement(msgspec.Struct, frozen=True, kw_only=True):
    n: int
    agreement: float  # share of pairs where the verdict equals the label
    cohen_kappa: float | None  # agreement beyond chance; None when undefined (one class only on both sides)
    confusion: Confusion
    auc: float | None = None  # ranking quality of the scores, threshold-free; None without both labels
    judge: str = ""


def confusion_of(verdicts: Sequence[bool], labels: Sequence[bool]) -> Confusion:
    if len(verdicts) != len(labels):
        raise InvalidInput("as many verdicts as labels are needed")
    pairs = list(zip(verdicts, labels, strict=True))
    return Confusion(
        tp=sum(v and t for v, t in pairs),
        fp=sum(v and not t for v, t in pairs),
        fn=sum(not v and t for v, t in pairs),
        tn=sum(not v and not t for v, t in pairs),
    )


def agreement_of(confusion: Confusion) -> tuple[float, float | None]:
    """Observed agreement and Cohen's kappa from the 2x2 table."""
    n = confusion.tp + confusion.fp + confusion.fn + confusion.tn
    if n == 0:
        raise InvalidInput("no labelled pairs to measure agreement on")
    observed = (confusion.tp + confusion.tn) / n
    judged_yes, labelled_yes = confusion.tp + confusion.fp, confusion.tp + confusion.fn
    expected = (judged_yes * labelled_yes + (n - judged_yes) * (n - labelled_yes)) / (n * n)
    kappa = None if expected == 1.0 else (observed - expected) / (1.0 - expected)
    return observed, kappa


def score_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """The probability that a positive pair scores above a negative one (ties count half): the
    Mann-Whitney U statistic over positives times negatives."""
    positives = [s for s, t in zip(scores, labels, strict=True) if t]
    negatives = [s for s, t in zip(scores, labels, strict=True) if not t]
    if not positives or not negatives:
        return None
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(positives, negatives, alternative="two-sided").statistic
    return float(u) / (len(positives) * len(negatives))


def judge_agreement(
    judge: Judge,
    labelled_pairs: Sequence[SupportPair | AnswerPair],
    progress: Callable[[int, int], None] | None = None,
) -> Agreement:
    """How often `judge` agrees with the labels of `labelled_pairs`, with kappa, the table and AUC."""
    verdicts, scores, labels = [], [], []
    for done, pair in enumerate(labelled_pairs, start=1):
        if isinstance(pair, SupportPair):
            judgment = judge.supported(pair.sentence, pair.passage)
        elif isinstance(pair, AnswerPair):
            judgment = judge.correct(pair.question, pair.gold_answer, pair.answer)
        else:
            raise InvalidInput(f"pair {done}: expected a SupportPair or an AnswerPair")
        verdicts.append(judgment.verdict)
        scores.append(judgment.score)
        labels.append(bool(pair.label))
        if progress is not None:
            progress(done, len(labelled_pairs))
    confusion = confusion_of(verdicts, labels)
    observed, kappa = agreement_of(confusion)
    return Agreement(
        n=len(labels),
        agreement=observed,
        cohen_kappa=kappa,
        confusion=confusion,
        auc=score_auc(scores, labels),
        judge=judge.name,
    )
