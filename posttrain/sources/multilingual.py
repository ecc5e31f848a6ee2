"""Multilingual math word problems: one-step stories (add, take away, multiply) written in en, fr, es,
de, ru, zh and ja, to be answered in the prompt's language (Llama 3 §4.3.2's multilingual prompts,
checked by reward.multilingual: language gate + math answer).

Each language has its own names, objects and grammar (gendered pronouns, Spanish noun gender, Russian
numeral agreement, Chinese classifiers, Japanese counters), so a story reads as written by a speaker,
not as a translation with numbers swapped in. Answers are integers from 2 to 198: below 1000, so no
answer needs a thousands separator, which these languages write differently ("1 000", "1.000").
Held-out prompts are the questions whose text hashes into bucket 0 of 5 (disjoint from train
whatever the seed). Eval data (MMATH) is never used here.
"""

from __future__ import annotations

import hashlib
import random
from typing import Callable

SPLITS = ("train", "heldout")

# Instruction per language: answer in that language, end with the phrase reward.math reads.
INSTRUCTIONS = {
    "en": 'Answer in English, explaining briefly, and end with "The answer is <number>."',
    "fr": "Répondez en français, en expliquant brièvement, et terminez par « La réponse est <nombre>. »",
    "es": "Responde en español, explicando brevemente, y termina con «La respuesta es <número>.»",
    "de": "Antworte auf Deutsch mit einer kurzen Erklärung und schließe mit „Die Antwort ist <Zahl>.“",
    "ru": "Ответьте на русском языке с кратким объяснением и закончите фразой «Ответ: <число>.»",
    "zh": "请用中文回答，简要说明理由，并以“答案是<数字>。”结尾。",
    "ja": "日本語で簡単に説明して答え、最後に「答えは<数>です。」と書いてください。",
}


def _numbers(rng: random.Random, op: str) -> tuple[int, int, int]:
    """(a, b, answer) for one story; every count in a question is >= 2 (plural forms throughout)."""
    if op == "add":
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        return a, b, a + b
    if op == "sub":
        a = rng.randint(4, 99)
        b = rng.randint(2, a - 2)
        return a, b, a - b
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return a, b, a * b


# --------------------------------------------------------------------------- en

EN_NAMES = [("Emma", "She"), ("Olivia", "She"), ("Grace", "She"), ("Liam", "He"), ("Noah", "He"), ("Jack", "He")]
EN_ITEMS = ["apples", "books", "pencils", "marbles", "cookies", "stamps"]


def story_en(rng: random.Random, op: str, a: int, b: int) -> str:
    (name, pron), items = rng.choice(EN_NAMES), rng.choice(EN_ITEMS)
    if op == "add":
        return f"{name} has {a} {items}. {pron} buys {b} more. How many {items} does {name} have now?"
    if op == "sub":
        return f"{name} has {a} {items} and gives {b} of them to a friend. How many {items} does {name} have left?"
    return f"{name} has {a} boxes. Each box holds {b} {items}. How many {items} are there in all?"


# --------------------------------------------------------------------------- fr

FR_NAMES = [("Marie", "elle"), ("Camille", "elle"), ("Léa", "elle"), ("Lucas", "il"), ("Hugo", "il"), ("Louis", "il")]
FR_ITEMS = ["pommes", "livres", "crayons", "billes", "biscuits", "timbres"]


def story_fr(rng: random.Random, op: str, a: int, b: int) -> str:
    (name, pron), items = rng.choice(FR_NAMES), rng.choice(FR_ITEMS)
    if op == "add":
        return (f"{name} a {a} {items}. {pron.capitalize()} en achète {b} de plus. "
                f"Combien de {items} {name} a-t-{pron} maintenant ?")
    if op == "sub":
        return f"{name} a {a} {items} et en donne {b} à un ami. Combien de {items} lui reste-t-il ?"
    return f"{name} a {a} boîtes. Chaque boîte contient {b} {items}. Combien de {items} y a-t-il en tout ?"


# --------------------------------------------------------------------------- es

ES_NAMES = ["Lucía", "Sofía", "Carmen", "Mateo", "Diego", "Pablo"]
ES_ITEMS = [("manzanas", "Cuántas"), ("libros", "Cuántos"), ("lápices", "Cuántos"), ("canicas", "Cuántas"),
            ("galletas", "Cuántas"), ("sellos", "Cuántos")]  # "¿Cuántos/Cuántas" agrees with the noun


def story_es(rng: random.Random, op: str, a: int, b: int) -> str:
    name, (items, how_many) = rng.choice(ES_NAMES), rng.choice(ES_ITEMS)
    if op == "add":
        return f"{name} tiene {a} {items}. Compra {b} más. ¿{how_many} {items} tiene {name} ahora?"
    if op == "sub":
        return f"{name} tiene {a} {items} y le da {b} a un amigo. ¿{how_many} {items} le quedan?"
    return f"{name} tiene {a} cajas. Cada caja contiene {b} {items}. ¿{how_many} {items} hay en total?"


# --------------------------------------------------------------------------- de

DE_NAMES = [("Anna", "Sie"), ("Lena", "Sie"), ("Marie", "Sie"), ("Paul", "Er"), ("Felix", "Er"), ("Jonas", "Er")]
DE_ITEMS = ["Äpfel", "Bücher", "Stifte", "Murmeln", "Kekse", "Briefmarken"]


def story_de(rng: random.Random, op: str, a: int, b: int) -> str:
    (name, pron), items = rng.choice(DE_NAMES), rng.choice(DE_ITEMS)
    if op == "add":
        return f"{name} hat {a} {items}. {pron} kauft {b} weitere dazu. Wie viele {items} hat {name} jetzt?"
    if op == "sub":
        return f"{name} hat {a} {items} und schenkt einem Freund {b} davon. Wie viele {items} hat {name} noch?"
    return f"{name} hat {a} Kisten. In jeder Kiste sind {b} {items}. Wie viele {items} sind es insgesamt?"


# --------------------------------------------------------------------------- ru

RU_NAMES = [("Анны", "Она"), ("Марии", "Она"), ("Ольги", "Она"), ("Ивана", "Он"), ("Петра", "Он"),
            ("Дмитрия", "Он")]  # genitive ("у Анны"), pronoun
# inanimate masculine/neuter nouns (accusative = nominative): forms after 1, after 2-4, after 5+ / "сколько"
RU_ITEMS = [("яблоко", "яблока", "яблок"), ("карандаш", "карандаша", "карандашей"), ("мяч", "мяча", "мячей"),
            ("пирожок", "пирожка", "пирожков"), ("шарик", "шарика", "шариков"), ("стикер", "стикера", "стикеров")]
RU_BOX = ("коробка", "коробки", "коробок")


def ru_form(n: int, forms: tuple[str, str, str]) -> str:
    """Russian noun form after the numeral n: 1, 21 -> one; 2-4, 22-24 -> few; 5-20, 25-30 -> many."""
    if n % 10 == 1 and n % 100 != 11:
        return forms[0]
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return forms[1]
    return forms[2]


def story_ru(rng: random.Random, op: str, a: int, b: int) -> str:
    (owner, pron), forms = rng.choice(RU_NAMES), rng.choice(RU_ITEMS)
    many = forms[2]
    if op == "add":
        return (f"У {owner} есть {a} {ru_form(a, forms)}. {pron} покупает ещё {b} {ru_form(b, forms)}. "
                f"Сколько {many} теперь у {owner}?")
    if op == "sub":
        return (f"У {owner} есть {a} {ru_form(a, forms)}. {pron} отдаёт другу {b} {ru_form(b, forms)}. "
                f"Сколько {many} осталось у {owner}?")
    return (f"У {owner} есть {a} {ru_form(a, RU_BOX)}. В каждой коробке {b} {ru_form(b, forms)}. "
            f"Сколько всего {many}?")


# --------------------------------------------------------------------------- zh

ZH_NAMES = ["小明", "小红", "李华", "王芳", "张伟", "刘洋"]
ZH_ITEMS = [("苹果", "个"), ("书", "本"), ("铅笔", "支"), ("弹珠", "颗"), ("饼干", "块"), ("邮票", "张")]  # classifier


def story_zh(rng: random.Random, op: str, a: int, b: int) -> str:
    name, (item, cl) = rng.choice(ZH_NAMES), rng.choice(ZH_ITEMS)
    if op == "add":
        return f"{name}有{a}{cl}{item}，又买了{b}{cl}。{name}现在一共有多少{cl}{item}？"
    if op == "sub":
        return f"{name}有{a}{cl}{item}，送给朋友{b}{cl}。{name}还剩多少{cl}{item}？"
    return f"{name}有{a}个盒子，每个盒子里有{b}{cl}{item}。一共有多少{cl}{item}？"


# --------------------------------------------------------------------------- ja

JA_NAMES = ["さくら", "ゆい", "はると", "けんた", "田中", "佐藤"]
JA_ITEMS = [("りんご", "個"), ("本", "冊"), ("えんぴつ", "本"), ("ビー玉", "個"),
            ("クッキー", "枚"), ("切手", "枚")]  # counter


def story_ja(rng: random.Random, op: str, a: int, b: int) -> str:
    name, (item, ctr) = rng.choice(JA_NAMES), rng.choice(JA_ITEMS)
    if op == "add":
        return (f"{name}さんは{item}を{a}{ctr}持っています。さらに{b}{ctr}買いました。"
                f"{name}さんは今、{item}を何{ctr}持っていますか？")
    if op == "sub":
        return (f"{name}さんは{item}を{a}{ctr}持っています。友だちに{b}{ctr}あげました。"
                f"{item}は何{ctr}残っていますか？")
    return (f"{name}さんは箱を{a}個持っています。どの箱にも{item}が{b}{ctr}入っています。"
            f"{item}は全部で何{ctr}ありますか？")


STORIES: dict[str, Callable[[random.Random, str, int, int], str]] = {
    "en": story_en, "fr": story_fr, "es": story_es, "de": story_de, "ru": story_ru, "zh": story_zh, "ja": story_ja,
}
LANGUAGES = list(STORIES)
OPS = ("add", "sub", "mul")


def task(rng: random.Random) -> tuple[str, str, str]:
    """(language, question, answer) for one random story."""
    lang, op = rng.choice(LANGUAGES), rng.choice(OPS)
    a, b, answer = _numbers(rng, op)
    return lang, STORIES[lang](rng, op, a, b), str(answer)


def is_heldout(question: str) -> bool:
    return int(hashlib.sha256(question.encode()).hexdigest(), 16) % 5 == 0


def draw(split: str, n: int, seed: int) -> list[dict]:
    """n prompt records of one split, in draw order (a larger n extends a smaller one's list)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"multilingual_math-{seed}")
    out, seen = [], set()
    while len(out) < n:
        lang, question, answer = task(rng)
        if question in seen or is_heldout(question) != (split == "heldout"):
            continue
        seen.add(question)
        out.append({
            "id": f"multilingual_math/{split}/{len(out):06d}",
            "capability": "multilingual",
            "messages": [{"role": "user", "content": f"{question}\n{INSTRUCTIONS[lang]}"}],
            "language": lang,
            "answer": answer,
        })
    return out
