"""The fourteen JSON-schema tools of the tools prompts (posttrain/sources/tools.py), and the values their
questions draw from."""

from __future__ import annotations

# --------------------------------------------------------------------------- tool schemas


def _tool(name: str, description: str, required: list[str], **properties: dict) -> dict:
    return {"name": name, "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required}}


def _string(description: str) -> dict:
    return {"type": "string", "description": description}


def _integer(description: str, minimum: int = 1, maximum: int | None = None) -> dict:
    bounds = {"minimum": minimum} | ({"maximum": maximum} if maximum is not None else {})
    return {"type": "integer", "description": description, **bounds}


def _number(description: str) -> dict:
    return {"type": "number", "description": description}


def _boolean(description: str) -> dict:
    return {"type": "boolean", "description": description}


def _enum(description: str, values: list[str]) -> dict:
    return {"type": "string", "enum": values, "description": description}


UNITS = {  # unit -> plural, grouped by what they measure (a conversion stays within a group)
    "length": {"kilometer": "kilometers", "mile": "miles", "meter": "meters", "foot": "feet", "inch": "inches",
               "centimeter": "centimeters"},
    "mass": {"kilogram": "kilograms", "pound": "pounds", "gram": "grams", "ounce": "ounces"},
    "volume": {"liter": "liters", "gallon": "gallons", "milliliter": "milliliters", "cup": "cups"},
}
CURRENCIES = {"USD": "US dollars", "EUR": "euros", "GBP": "British pounds", "JPY": "Japanese yen",
              "CHF": "Swiss francs", "CAD": "Canadian dollars", "AUD": "Australian dollars", "INR": "Indian rupees",
              "MXN": "Mexican pesos", "SEK": "Swedish kronor", "CNY": "Chinese yuan", "ZAR": "South African rand"}
LANGUAGES = {"en": "English", "fr": "French", "es": "Spanish", "de": "German", "it": "Italian", "pt": "Portuguese",
             "nl": "Dutch", "ja": "Japanese"}
STOCKS = {"Apple": ("AAPL", "NASDAQ"), "Microsoft": ("MSFT", "NASDAQ"), "Amazon": ("AMZN", "NASDAQ"),
          "Tesla": ("TSLA", "NASDAQ"), "Nvidia": ("NVDA", "NASDAQ"), "Netflix": ("NFLX", "NASDAQ"),
          "Intel": ("INTC", "NASDAQ"), "Alphabet": ("GOOGL", "NASDAQ"), "Adobe": ("ADBE", "NASDAQ"),
          "Costco": ("COST", "NASDAQ"), "Coca-Cola": ("KO", "NYSE"), "Disney": ("DIS", "NYSE"),
          "Nike": ("NKE", "NYSE"), "Boeing": ("BA", "NYSE"), "IBM": ("IBM", "NYSE"), "McDonald's": ("MCD", "NYSE"),
          "Visa": ("V", "NYSE"), "Pfizer": ("PFE", "NYSE"), "Exxon Mobil": ("XOM", "NYSE")}
MODES = ["driving", "walking", "bicycling", "transit"]

TOOLS = {t["name"]: t for t in [
    _tool("get_weather", "Current weather and forecast for a city.", ["city"],
          city=_string("City name, e.g. Paris."),
          unit=_enum("Temperature unit. Default: celsius.", ["celsius", "fahrenheit"]),
          days=_integer("Number of forecast days. Default: 1.", 1, 7)),
    _tool("convert_units", "Convert a quantity from one unit to another of the same kind.",
          ["value", "from_unit", "to_unit"],
          value=_number("The quantity to convert."),
          from_unit=_enum("Unit of the value.", [u for g in UNITS.values() for u in g]),
          to_unit=_enum("Unit to convert to.", [u for g in UNITS.values() for u in g])),
    _tool("convert_currency", "Convert an amount of money between currencies at today's rate.",
          ["amount", "from_currency", "to_currency"],
          amount=_number("The amount of money."),
          from_currency=_enum("ISO 4217 code of the amount's currency.", list(CURRENCIES)),
          to_currency=_enum("ISO 4217 code of the target currency.", list(CURRENCIES))),
    _tool("create_calendar_event", "Add an event to the user's calendar.", ["title", "date"],
          title=_string("Title of the event."),
          date=_string("Date of the event, YYYY-MM-DD."),
          start_time=_string("Start time, HH:MM on a 24-hour clock. Default: an all-day event."),
          duration_minutes=_integer("Length of the event in minutes. Default: 60.")),
    _tool("set_reminder", "Remind the user of something after a delay.", ["text", "minutes_from_now"],
          text=_string("What to remind the user of."),
          minutes_from_now=_integer("Delay before the reminder, in minutes.")),
    _tool("search_web", "Search the web and return the top results.", ["query"],
          query=_string("The search query."),
          max_results=_integer("Number of results to return. Default: 10.", 1, 20)),
    _tool("send_email", "Send an email from the user's account.", ["to", "subject", "body"],
          to=_string("Recipient's email address."),
          subject=_string("Subject line."),
          body=_string("Text of the email."),
          urgent=_boolean("Mark the email as high priority. Default: false.")),
    _tool("get_stock_price", "Latest trading price of a stock.", ["symbol"],
          symbol=_string("Ticker symbol, e.g. AAPL."),
          exchange=_enum("Stock exchange. Default: the stock's primary listing.", ["NASDAQ", "NYSE"])),
    _tool("translate_text", "Translate text into another language.", ["text", "target_language"],
          text=_string("The text to translate."),
          target_language=_enum("ISO 639-1 code of the language to translate into.", list(LANGUAGES)),
          source_language=_enum("ISO 639-1 code of the text's language. Default: detected.", list(LANGUAGES))),
    _tool("set_timer", "Start a countdown timer.", ["minutes"],
          minutes=_integer("Length of the timer in minutes."),
          label=_string("Name shown on the timer.")),
    _tool("book_restaurant", "Reserve a table at a restaurant.", ["restaurant", "party_size", "date", "time"],
          restaurant=_string("Name of the restaurant."),
          party_size=_integer("Number of guests.", 1, 20),
          date=_string("Date of the booking, YYYY-MM-DD."),
          time=_string("Time of the booking, HH:MM on a 24-hour clock."),
          outdoor=_boolean("Ask for a table outside. Default: false.")),
    _tool("play_music", "Play a song on the user's speaker.", ["song"],
          song=_string("Title of the song."),
          artist=_string("Artist, when the user names one."),
          shuffle=_boolean("Shuffle the queue after this song. Default: false.")),
    _tool("calculate_tip", "Compute the tip for a bill, and each person's share.", ["bill_amount", "tip_percent"],
          bill_amount=_number("Total of the bill."),
          tip_percent=_number("Tip as a percentage of the bill, e.g. 15."),
          people=_integer("Number of people splitting the bill. Default: 1.")),
    _tool("get_directions", "Route between two places.", ["origin", "destination"],
          origin=_string("Starting place."),
          destination=_string("Where to go."),
          mode=_enum("How to travel. Default: driving.", MODES)),
]}
# search_web could serve almost any question, so it is offered only when it is the answer.
NEVER_DISTRACTOR = {"search_web"}
