"""The tools benchmark's material: six tools, prompts that need one (in words other than the
tools' descriptions), and prompts that need none (some near a tool's subject).

Each tool's prompts and the no-tool prompts are split: `tune` (looked at when choosing prompts
and parsing rules) and `test` (never tuned on; reported apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOOLS: list[dict[str, Any]] = [
    {
        "name": "get_weather",
        "description": "Current weather conditions for a city.",
        "path": "/weather",
        "side_effects": False,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city"}},
            "required": ["city"],
        },
    },
    {
        "name": "set_timer",
        "description": "Start a countdown timer that rings when it ends.",
        "path": "/timer",
        "side_effects": True,
        "parameters": {
            "type": "object",
            "properties": {
                "minutes": {"type": "integer", "description": "how long, in minutes"},
                "label": {"type": "string", "description": "what it is for (optional)"},
            },
            "required": ["minutes"],
        },
    },
    {
        "name": "convert_currency",
        "description": "Convert an amount of money from one currency to another.",
        "path": "/convert",
        "side_effects": False,
        "parameters": {
            "type": "object",
            "properties": {
                "amount": {"type": "number"},
                "from": {"type": "string", "description": "ISO code, e.g. USD"},
                "to": {"type": "string", "description": "ISO code, e.g. EUR"},
            },
            "required": ["amount", "from", "to"],
        },
    },
    {
        "name": "place_order",
        "description": "Order a product for delivery to the user.",
        "path": "/order",
        "side_effects": True,
        "parameters": {
            "type": "object",
            "properties": {
                "item": {"type": "string", "description": "what to order"},
                "quantity": {"type": "integer", "description": "how many"},
            },
            "required": ["item", "quantity"],
        },
    },
    {
        "name": "control_light",
        "description": "Switch the lights of a room on or off.",
        "path": "/timer",  # any endpoint that answers: the benchmark checks the call
        "side_effects": True,
        "parameters": {
            "type": "object",
            "properties": {
                "room": {"type": "string"},
                "on": {"type": "boolean", "description": "true: on, false: off"},
            },
            "required": ["room", "on"],
        },
    },
]
BUILTINS = ["current_time"]


@dataclass(frozen=True)
class Case:
    text: str
    tool: str | None  # None: no tool should be called
    args: dict[str, Any] = field(default_factory=dict)  # what the arguments must hold
    split: str = "tune"


def _cases(tool: str | None, items: list[tuple[str, dict[str, Any]]]) -> list[Case]:
    half = len(items) // 2
    return [
        Case(text, tool, args, "tune" if i < half else "test")
        for i, (text, args) in enumerate(items)
    ]


WITH_TOOL: list[Case] = [
    *_cases(
        "get_weather",
        [
            ("Do I need an umbrella in Seattle today?", {"city": "Seattle"}),
            ("How hot is it in Cairo at the moment?", {"city": "Cairo"}),
            ("What's it like outside in Dublin right now?", {"city": "Dublin"}),
            ("Is it snowing in Oslo?", {"city": "Oslo"}),
            ("Should I wear a coat if I go out in Berlin?", {"city": "Berlin"}),
            ("Tell me the conditions over in Tokyo.", {"city": "Tokyo"}),
            ("Any chance of sunshine in Madrid right now?", {"city": "Madrid"}),
            ("How's the sky looking in Toronto?", {"city": "Toronto"}),
        ],
    ),
    *_cases(
        "set_timer",
        [
            ("Remind me in fifteen minutes to take the pasta out.", {"minutes": 15}),
            ("Give me a ten minute countdown.", {"minutes": 10}),
            ("Can you ring in twenty minutes?", {"minutes": 20}),
            ("Count down five minutes for my tea.", {"minutes": 5}),
            ("Let me know when half an hour has passed.", {"minutes": 30}),
            ("Beep at me in three minutes.", {"minutes": 3}),
            ("I need an alarm going off in forty five minutes.", {"minutes": 45}),
            ("Start counting down eight minutes for the eggs.", {"minutes": 8}),
        ],
    ),
    *_cases(
        "convert_currency",
        [
            ("How many euros is a hundred dollars?", {"amount": 100, "from": "USD", "to": "EUR"}),
            (
                "What are fifty pounds worth in US dollars?",
                {"amount": 50, "from": "GBP", "to": "USD"},
            ),
            (
                "Turn two hundred euros into yen for me.",
                {"amount": 200, "from": "EUR", "to": "JPY"},
            ),
            (
                "If I have 75 Swiss francs, how many dollars is that?",
                {"amount": 75, "from": "CHF", "to": "USD"},
            ),
            ("What's 30 dollars in British pounds?", {"amount": 30, "from": "USD", "to": "GBP"}),
            ("How much is 1000 yen in euros?", {"amount": 1000, "from": "JPY", "to": "EUR"}),
            (
                "I've got 60 euros, what's that in Swiss francs?",
                {"amount": 60, "from": "EUR", "to": "CHF"},
            ),
            (
                "Change 500 US dollars to yen, how much do I get?",
                {"amount": 500, "from": "USD", "to": "JPY"},
            ),
        ],
    ),
    *_cases(
        "place_order",
        [
            ("Get me two pizzas delivered.", {"item": "pizza", "quantity": 2}),
            ("I'd like three bottles of water brought over.", {"item": "water", "quantity": 3}),
            ("Buy one pack of batteries for me.", {"item": "batter", "quantity": 1}),
            ("Please have four coffees sent up.", {"item": "coffee", "quantity": 4}),
            ("Can you order me a dozen eggs?", {"item": "egg", "quantity": 12}),
            ("Send over two loaves of bread.", {"item": "bread", "quantity": 2}),
            ("I want five cans of soda delivered.", {"item": "soda", "quantity": 5}),
            ("Have one umbrella shipped to me.", {"item": "umbrella", "quantity": 1}),
        ],
    ),
    *_cases(
        "control_light",
        [
            ("Turn off the kitchen lights.", {"room": "kitchen", "on": False}),
            ("It's too dark in the bedroom, can you fix that?", {"room": "bedroom", "on": True}),
            ("Switch on the lamp in the living room.", {"room": "living room", "on": True}),
            ("Kill the lights in the garage.", {"room": "garage", "on": False}),
            ("Light up the hallway please.", {"room": "hallway", "on": True}),
            ("Make the bathroom dark.", {"room": "bathroom", "on": False}),
            ("Could you brighten the office?", {"room": "office", "on": True}),
            ("Shut the lights in the dining room.", {"room": "dining room", "on": False}),
        ],
    ),
    *_cases(
        "current_time",
        [
            ("What day of the week is it today?", {}),
            ("Do you know what time it is?", {}),
            ("What's today's date?", {}),
            ("Is it morning or afternoon where I am right now?", {}),
        ],
    ),
]

WITHOUT_TOOL: list[Case] = _cases(
    None,
    [
        ("What is the capital of France?", {}),
        ("How many legs does a spider have?", {}),
        ("Tell me a fun fact about octopuses.", {}),
        ("Who wrote Romeo and Juliet?", {}),
        ("Thanks, that's all I needed.", {}),
        ("How do I boil an egg?", {}),
        ("What's a good name for a golden retriever?", {}),
        ("Why is the sky blue?", {}),
        ("Can you say hello in Spanish?", {}),
        ("What is two plus two?", {}),
        ("How far is the moon from Earth?", {}),
        ("What does a thermostat do?", {}),
        ("What's the difference between a dollar and a euro?", {}),
        ("Is it healthy to eat eggs every day?", {}),
        ("How many minutes are in an hour?", {}),
        ("Who invented the light bulb?", {}),
        ("What should I cook for dinner tonight?", {}),
        ("Tell me a short joke.", {}),
        ("What language do they speak in Brazil?", {}),
        ("How do rainbows form?", {}),
        ("Can you recommend a good book?", {}),
        ("What rhymes with orange?", {}),
    ],
)
