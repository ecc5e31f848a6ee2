"""Number-words verifier (the tiny world's multilingual task): the reply must be the expected number
word, in the language asked for.

This is a word-table gate, not language identification: it only knows the number words of NUMBER_WORDS
below (the tiny world's table, which posttrain/tiny/world.py draws from), so "wrong language" means "a number
word from another table". A one-word reply carries too little text for a language identifier, which is why
the tiny task keeps this check and free-text replies go to reward.multilingual.
"""

from __future__ import annotations

import unicodedata

from reward.verdict import FAIL, PASS, Verdict, as_text, column, missing

NUMBER_WORDS = {
    "en": "zero one two three four five six seven eight nine ten eleven twelve".split(),
    "fr": "zéro un deux trois quatre cinq six sept huit neuf dix onze douze".split(),
    "es": "cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce".split(),
    "de": "null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf".split(),
}
TRAILING = " \t\r\n.,;:!?¡¿\"'`*)"


def score(completions: list, language: list | None = None, answer: list | None = None,
          **_) -> list[Verdict]:
    """completions[i] vs answer[i] (a word in language[i]) -> one Verdict per completion."""
    n = len(completions)
    rows = zip(completions, column(language, n, "language"), column(answer, n, "answer"))
    return [_verdict(as_text(c), lang, ans) for c, lang, ans in rows]


def normalize(text: str) -> str:
    """Strip, lowercase, drop trailing punctuation; NFC so a decomposed "fünf" matches the table's."""
    return unicodedata.normalize("NFC", text).strip().lower().rstrip(TRAILING).strip()


def _verdict(text: str, language: str | None, answer: str | None) -> Verdict:
    if (na := missing(language=language, answer=answer)) is not None:
        return na
    word = normalize(text)
    if word == normalize(answer):
        return Verdict(PASS, "correct")
    # "six" is both English and French: a word of the asked language is a wrong number, not a wrong language
    if word in NUMBER_WORDS.get(language, ()):
        return Verdict(FAIL, "wrong answer")
    others = [lang for lang, words in NUMBER_WORDS.items() if word in words]
    if others:
        return Verdict(FAIL, f"wrong language: {'/'.join(others)}")
    return Verdict(FAIL, "wrong answer")
