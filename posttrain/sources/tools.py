"""Tool-use prompts the project makes itself: one JSON tool call chosen from 2-4 offered JSON-schema tools.

Fourteen everyday tools (weather, unit and currency conversion, calendar, reminders, web search, email,
stock prices, translation, timers, restaurant bookings, music, tips, directions) with typed arguments:
strings, integers, numbers, booleans, enums, and optional arguments that a question sometimes sets. Each
tool has several question templates; some need a small step beyond copying (a 12-hour time to HH:MM, a
date to YYYY-MM-DD, hours to minutes, a company to its ticker). The prompt is rendered by
`reward.tools.render_tools_prompt` (as BFCL eval prompts are) with the target tool among distractors,
and the expected call is exact: {"name", "arguments"}, with exactly the optional arguments the question sets.

The split is a hash partition of the question text, so a held-out question never appears in training,
not even with other distractors. No BFCL data is used: eval sets stay out of training prompts.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Callable

from posttrain.sources.tool_catalog import (CURRENCIES, LANGUAGES, NEVER_DISTRACTOR, STOCKS, TOOLS,
                                             UNITS)
from reward.tools import render_tools_prompt

NAME = "tools"

FIRST = ["Anna", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam", "Maya",
         "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Yara", "Zoe", "Ali",
         "Bianca", "Carlos", "Dara", "Emil"]
LAST = ["Berg", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen", "Kowalski", "Lopez",
        "Moreau", "Nakamura", "Okafor", "Petrov", "Rossi", "Silva", "Tanaka", "Urban", "Weber", "Young", "Zhang"]
CITIES = ["Paris", "Lima", "Oslo", "Tokyo", "Cairo", "Quito", "Rome", "Delhi", "Accra", "Seoul", "Bern", "Dakar",
          "Hanoi", "Riga", "Sofia", "Tunis", "Baku", "Doha", "Lisbon", "Madrid", "Berlin", "Vienna", "Prague",
          "Warsaw", "Dublin", "Athens", "Nairobi", "Lagos", "Toronto", "Chicago", "Denver", "Boston", "Austin",
          "Seattle", "Miami", "Sydney", "Perth", "Auckland", "Manila", "Jakarta", "Bangkok", "Mumbai", "Istanbul",
          "Helsinki", "Stockholm", "Copenhagen", "Reykjavik", "Montreal", "Santiago", "Bogota"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


# --------------------------------------------------------------------------- values shared by questions


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _date(rng: random.Random) -> tuple[str, str]:
    """(YYYY-MM-DD, the way a person writes it)."""
    year, month, day = rng.randint(2025, 2027), rng.randint(1, 12), rng.randint(1, 28)
    spoken = rng.choice([f"{MONTHS[month - 1]} {day}, {year}", f"{day} {MONTHS[month - 1]} {year}"])
    return f"{year:04d}-{month:02d}-{day:02d}", spoken


def _time(rng: random.Random, first_hour: int = 7, last_hour: int = 20) -> tuple[str, str]:
    """(HH:MM on a 24-hour clock, the same time as "3 pm" or "3:30 pm")."""
    hour, minute = rng.randint(first_hour, last_hour), rng.choice([0, 0, 15, 30, 45])
    clock = f"{(hour - 1) % 12 + 1}" + (f":{minute:02d}" if minute else "")
    return f"{hour:02d}:{minute:02d}", f"{clock} {'am' if hour < 12 else 'pm'}"


def _amount(rng: random.Random, low: int, high: int, decimals: int) -> tuple[str, int | float]:
    """(the number as written in the question, its JSON value): the two always agree."""
    text = str(rng.randint(low, high))
    if decimals and rng.random() < 0.5:
        text += "." + "".join(str(rng.randint(0, 9)) for _ in range(decimals - 1)) + str(rng.randint(1, 9))
    return text, json.loads(text)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --------------------------------------------------------------------------- questions, one asker per tool
# An asker returns (question, arguments); the arguments hold exactly the optional ones the question sets.


def _weather(rng: random.Random) -> tuple[str, dict]:
    city, unit, days = rng.choice(CITIES), rng.choice(["celsius", "fahrenheit"]), rng.randint(2, 7)
    return rng.choice([
        (f"What's the weather like in {city}?", {"city": city}),
        (f"Will it rain in {city} today?", {"city": city}),
        (f"What's the temperature in {city} right now, in {unit.title()}?", {"city": city, "unit": unit}),
        (f"Give me the {days}-day forecast for {city}.", {"city": city, "days": days}),
        (f"I need the weather in {city} for the next {days} days, in degrees {unit.title()}.",
         {"city": city, "days": days, "unit": unit}),
    ])


def _units(rng: random.Random) -> tuple[str, dict]:
    group = UNITS[rng.choice(list(UNITS))]
    src, dst = rng.sample(list(group), 2)
    text, value = _amount(rng, 2, 500, 1)
    args = {"value": value, "from_unit": src, "to_unit": dst}
    return rng.choice([f"Convert {text} {group[src]} to {group[dst]}.",
                       f"How many {group[dst]} are in {text} {group[src]}?",
                       f"What is {text} {group[src]} in {group[dst]}?"]), args


def _currency(rng: random.Random) -> tuple[str, dict]:
    src, dst = rng.sample(list(CURRENCIES), 2)
    text, amount = _amount(rng, 5, 5000, 2)
    args = {"amount": amount, "from_currency": src, "to_currency": dst}
    return rng.choice([f"How much is {text} {CURRENCIES[src]} in {CURRENCIES[dst]}?",
                       f"Convert {text} {src} to {dst}.",
                       f"I have {text} {CURRENCIES[src]}. What is that in {CURRENCIES[dst]}?"]), args


def _calendar(rng: random.Random) -> tuple[str, dict]:
    title = rng.choice(["Team sync", "Dentist appointment", "Project review", "Yoga class", "Budget meeting",
                        "Piano lesson", "Book club", "Quarterly planning", "Car service", "Job interview",
                        f"Lunch with {rng.choice(FIRST)}", f"Call with {_person(rng)}"])
    (iso, spoken), (hhmm, clock) = _date(rng), _time(rng)
    minutes = rng.choice([15, 30, 45, 90, 120])
    return rng.choice([
        (f'Add "{title}" to my calendar on {spoken}.', {"title": title, "date": iso}),
        (f'Schedule "{title}" on {iso} at {hhmm}.', {"title": title, "date": iso, "start_time": hhmm}),
        (f'Put "{title}" in my calendar for {spoken} at {clock}, for {minutes} minutes.',
         {"title": title, "date": iso, "start_time": hhmm, "duration_minutes": minutes}),
        (f'Create a {minutes}-minute event called "{title}" on {spoken}.',
         {"title": title, "date": iso, "duration_minutes": minutes}),
    ])


def _reminder(rng: random.Random) -> tuple[str, dict]:
    name = rng.choice(FIRST)
    task = rng.choice(["water the plants", "take the bread out of the oven", "check the laundry", "buy milk",
                       "book the train tickets", "feed the cat", "move the car", "stretch", f"call {name}",
                       f"send the report to {name}", f"pick up {name} from school", f"reply to {name}"])
    minutes, hours = rng.randint(2, 120), rng.randint(1, 5)
    return rng.choice([
        (f"Remind me to {task} in {minutes} minutes.", {"text": task, "minutes_from_now": minutes}),
        (f"Set a reminder to {task} {minutes} minutes from now.", {"text": task, "minutes_from_now": minutes}),
        (f"In {_plural(hours, 'hour')}, remind me to {task}.", {"text": task, "minutes_from_now": 60 * hours}),
    ])


SEARCH_PLACES = ["best coffee shops", "cheap hotels", "vegan restaurants", "public holidays", "bike rentals",
                 "museums open on Sunday"]
SEARCH_SKILLS = ["fix a bike chain", "bake sourdough bread", "tie a bowline knot", "plant tomatoes",
                 "clean a cast iron pan", "learn to juggle"]


def _search(rng: random.Random) -> tuple[str, dict]:
    city, other = rng.sample(CITIES, 2)
    query = rng.choice([f"{rng.choice(SEARCH_PLACES)} in {city}", f"how to {rng.choice(SEARCH_SKILLS)}",
                        f"train from {city} to {other}", f"history of {city}"])
    k = rng.randint(2, 20)
    return rng.choice([
        (f'Search the web for "{query}".', {"query": query}),
        (f'Look up "{query}" online and give me the top {k} results.', {"query": query, "max_results": k}),
        (f'Find {k} web pages about "{query}".', {"query": query, "max_results": k}),
    ])


def _email(rng: random.Random) -> tuple[str, dict]:
    to = f"{rng.choice(FIRST)}.{rng.choice(LAST)}@example.com".lower()
    subject = rng.choice(["Lunch tomorrow", "Project update", "Invoice", "Weekend plans", "Meeting notes",
                          "Travel plans", "Quick question", "Thank you"])
    body = rng.choice(["See you at noon.", "The draft is ready for review.", "Please find the invoice attached.",
                       "Can we move our call to Friday?", "Thanks for your help today.", "The train leaves at 9.",
                       "Let me know what you think.", "I will be ten minutes late."])
    args = {"to": to, "subject": subject, "body": body}
    return rng.choice([
        (f'Email {to} with the subject "{subject}" and the message "{body}"', args),
        (f'Send an urgent email to {to}: subject "{subject}", body "{body}"', {**args, "urgent": True}),
        (f'Write to {to} with the subject "{subject}", saying "{body}" It is not urgent.',
         {**args, "urgent": False}),
    ])


def _stock(rng: random.Random) -> tuple[str, dict]:
    company = rng.choice(list(STOCKS))
    symbol, exchange = STOCKS[company]
    return rng.choice([
        (f"What is {company} stock trading at?", {"symbol": symbol}),
        (f"Get the current price of {symbol}.", {"symbol": symbol}),
        (f"How much is one share of {symbol} on the {exchange}?", {"symbol": symbol, "exchange": exchange}),
    ])


PHRASES = ["good morning", "where is the train station?", "thank you very much", "how much does this cost?",
           "I would like a coffee, please", "the meeting starts at ten", "see you tomorrow", "happy birthday",
           "can you help me?", "the museum is closed on Mondays", "I am looking for a pharmacy",
           "what time is it?", "the weather is lovely today", "we need two tickets", "my phone is broken"]


def _translate(rng: random.Random) -> tuple[str, dict]:
    phrase, target = rng.choice(PHRASES), rng.choice([c for c in LANGUAGES if c != "en"])
    args = {"text": phrase, "target_language": target}
    return rng.choice([
        (f'Translate "{phrase}" into {LANGUAGES[target]}.', args),
        (f'How do you say "{phrase}" in {LANGUAGES[target]}?', args),
        (f'Translate this English text to {LANGUAGES[target]}: "{phrase}"', {**args, "source_language": "en"}),
    ])


def _timer(rng: random.Random) -> tuple[str, dict]:
    minutes, hours = rng.randint(2, 90), rng.randint(1, 2)
    label = rng.choice(["pasta", "tea", "laundry", "eggs", "bread", "nap", "workout", "pizza", "rice", "study"])
    extra = rng.randint(1, 59)
    return rng.choice([
        (f"Set a timer for {minutes} minutes.", {"minutes": minutes}),
        (f'Start a timer called "{label}" for {minutes} minutes.', {"minutes": minutes, "label": label}),
        (f"Timer for {_plural(hours, 'hour')} and {extra} minutes, please.", {"minutes": 60 * hours + extra}),
    ])


def _restaurant(rng: random.Random) -> tuple[str, dict]:
    place = f"{rng.choice(['The Golden', 'Blue', 'Little', 'Old', 'Green', 'Silver', 'Red'])} " \
            f"{rng.choice(['Fork', 'Lotus', 'Olive', 'Lantern', 'Harbor', 'Garden', 'Spoon', 'Oak'])}"
    (iso, spoken), (hhmm, clock), n = _date(rng), _time(rng, 12, 21), rng.randint(2, 12)
    args = {"restaurant": place, "party_size": n, "date": iso, "time": hhmm}
    return rng.choice([
        (f"Book a table for {n} at {place} on {spoken} at {clock}.", args),
        (f"Reserve {place} for {n} people on {iso} at {hhmm}; we'd like to sit outside.", {**args, "outdoor": True}),
        (f"Can you get us a table at {place} for {n} on {spoken}, {clock}? Indoors, please.",
         {**args, "outdoor": False}),
    ])


def _music(rng: random.Random) -> tuple[str, dict]:
    song = f"{rng.choice(['Blue', 'Midnight', 'Golden', 'Broken', 'Electric', 'Silent', 'Summer', 'Wild'])} " \
           f"{rng.choice(['Sky', 'Train', 'Heart', 'River', 'Dreams', 'Road', 'Fire', 'Waves'])}"
    artist = _person(rng)
    return rng.choice([
        (f'Play "{song}".', {"song": song}),
        (f'Play "{song}" by {artist}.', {"song": song, "artist": artist}),
        (f'Put on the song "{song}" by {artist}, then shuffle.', {"song": song, "artist": artist, "shuffle": True}),
        (f'Play "{song}" with shuffle on.', {"song": song, "shuffle": True}),
    ])


def _tip(rng: random.Random) -> tuple[str, dict]:
    text, bill = _amount(rng, 12, 400, 2)
    percent, people = rng.choice([10, 12, 15, 18, 20, 22, 25]), rng.randint(2, 8)
    args = {"bill_amount": bill, "tip_percent": percent}
    return rng.choice([
        (f"What's a {percent}% tip on a ${text} bill?", args),
        (f"How much should I tip on {text} dollars at {percent} percent?", args),
        (f"Our dinner came to ${text}. We want to tip {percent} percent and split it between {people} people.",
         {**args, "people": people}),
    ])


def _directions(rng: random.Random) -> tuple[str, dict]:
    origin, destination = rng.sample(CITIES, 2)
    args = {"origin": origin, "destination": destination}
    return rng.choice([
        (f"How do I get from {origin} to {destination}?", args),
        (f"Driving directions from {origin} to {destination}, please.", {**args, "mode": "driving"}),
        (f"Give me walking directions from {origin} to {destination}.", {**args, "mode": "walking"}),
        (f"I want to cycle from {origin} to {destination}. Which route?", {**args, "mode": "bicycling"}),
        (f"What's the best way to get to {destination} from {origin} by public transport?",
         {**args, "mode": "transit"}),
    ])


ASKERS: dict[str, Callable[[random.Random], tuple[str, dict]]] = {
    "get_weather": _weather, "convert_units": _units, "convert_currency": _currency,
    "create_calendar_event": _calendar, "set_reminder": _reminder, "search_web": _search, "send_email": _email,
    "get_stock_price": _stock, "translate_text": _translate, "set_timer": _timer, "book_restaurant": _restaurant,
    "play_music": _music, "calculate_tip": _tip, "get_directions": _directions,
}


# --------------------------------------------------------------------------- draw


def split_of(question: str) -> str:
    """The split a question belongs to, from a stable hash of its text (half train, half held-out)."""
    return "heldout" if hashlib.sha256(question.encode()).digest()[0] % 2 else "train"


def candidate(rng: random.Random) -> tuple[str, str, list[dict], dict]:
    """(question, target tool, offered tools in prompt order, arguments) for one prompt."""
    target = rng.choice(list(ASKERS))
    question, arguments = ASKERS[target](rng)
    pool = [t for t in TOOLS if t != target and t not in NEVER_DISTRACTOR]
    offered = [target, *rng.sample(pool, rng.randint(1, 3))]
    rng.shuffle(offered)
    return question, target, [TOOLS[t] for t in offered], arguments


def draw(split: str, n: int, seed: int) -> list[dict]:
    """n tool-use prompt records of a split. One candidate stream per seed serves both splits, each keeping
    the questions its hash partition owns (each question once), so a larger n extends a smaller one's list."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rng, seen, records = random.Random(f"{NAME}/{seed}"), set(), []
    attempts = 100 * (n + 100)  # bounded: the question space is large, but not infinite
    while len(records) < n:
        if (attempts := attempts - 1) < 0:
            raise ValueError(f"only {len(records)} distinct {split} tool prompts found for n={n}")
        question, target, offered, arguments = candidate(rng)
        if split_of(question) != split or question in seen:
            continue
        seen.add(question)
        records.append({
            "id": f"{NAME}/{split}/{len(records):06d}",
            "capability": "tools",
            "messages": render_tools_prompt(offered, [{"role": "user", "content": question}]),
            "tools": json.dumps(offered),
            "expected_call": json.dumps({"name": target, "arguments": arguments}),
        })
    return records
