"""The default topic taxonomy of the tagger: {coarse topic: {fine topic: description}}.

A recipe replaces it with `mix.topics`. Descriptions are embedded and each prompt takes the fine topic
of the nearest one, so they are written like the prompts they should attract (a sentence-embedding model
matches wording and subject, not labels). Coarse topics cover our four capabilities plus a few general
ones, so prompts from general chat data land somewhere sensible instead of being forced into math or code.
"""

from __future__ import annotations

import copy

DEFAULT_TOPICS: dict[str, dict[str, str]] = {
    "math": {
        "arithmetic": "Word problem: Ana has 5 apples and finds 3 more, or gives 2 away. How many apples does she "
                      "have now? What is 7 times 8? Add, subtract, multiply or divide.",
        "algebra": "Solve the equation for x, simplify the algebraic expression, or find the roots of the polynomial.",
        "geometry": "Find the area, perimeter, angle or volume of the triangle, circle, rectangle or cube.",
        "probability": "What is the probability of the event? Count the combinations or permutations; "
                       "compute the mean, median or expected value.",
        "number_theory": "Find the greatest common divisor, the remainder, the prime factors or the digits of the "
                         "integer.",
    },
    "code": {
        "write_function": "Write a Python function that takes an argument and returns the result.",
        "debugging": "Find and fix the bug in this code; why does my program raise this error?",
        "algorithms": "Implement an efficient algorithm: sort the list, search the graph, use dynamic programming, "
                      "a hash map or a binary search.",
        "explain_code": "Explain what this code snippet does, line by line, and its time complexity.",
        "sql_bash": "Write a SQL query, a bash command line or a regular expression.",
    },
    "tools": {
        "weather": "What is the weather in the city? Get the forecast.",
        "media": "Play the song, the playlist or the video.",
        "phone_messages": "Call my friend or send a text message to a contact.",
        "timers_reminders": "Set a timer, an alarm or a reminder for a few minutes.",
        "bookings": "Book a table, a flight, a hotel room or a taxi.",
        "search": "Search the web for the latest news, stock prices, sports scores or flight status.",
    },
    "multilingual": {
        "translation": "Translate this word or sentence into French, Spanish, German or another language.",
        "number_words": "Write the number as a word in French, Spanish or German; what is the word for the number?",
    },
    "writing": {
        "creative": "Write a short story, a poem or a joke about the subject.",
        "professional": "Draft an email to my boss, a cover letter or a report; summarize this text.",
    },
    "knowledge": {
        "science_history": "Explain a fact of science, history or geography: why is the sky blue, "
                           "who was the first president, what is the capital of the country?",
        "advice": "Give advice or recommendations: how can I sleep better, what should I cook, which laptop to buy?",
    },
    "reasoning": {
        "logic_puzzle": "Solve the logic puzzle or riddle: who is telling the truth, which box holds the prize?",
    },
    "chat": {
        "small_talk": "Hi, how are you today? Tell me about yourself; let's chat.",
    },
}


def default_topics() -> dict[str, dict[str, str]]:
    """A fresh copy of DEFAULT_TOPICS (each recipe gets its own mapping)."""
    return copy.deepcopy(DEFAULT_TOPICS)
