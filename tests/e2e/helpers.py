"""Small shared helpers for the e2e tests."""

from __future__ import annotations

import math

# A tool both SDKs can offer; the mock calls the first offered tool with
# {"input": "<text of the last user message>"} (contract section 8).
TOOL_NAME = "lookup"
TOOL_DESCRIPTION = "Looks a term up in the knowledge base."
TOOL_SCHEMA = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "what to look up"}},
    "required": ["input"],
}

OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": TOOL_DESCRIPTION,
            "parameters": TOOL_SCHEMA,
        },
    }
]

ANTHROPIC_TOOLS = [
    {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": TOOL_SCHEMA}
]


def echo(text: str) -> str:
    """The mock's deterministic reply to a last user message `text`."""
    return f"echo: {text}"


def tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def completion_tokens(reply: str) -> int:
    """The mock's completion token count for a text reply."""
    return max(1, tokens(len(reply)))


def prompt_tokens(texts: list[str], messages: int) -> int:
    """The mock's prompt token count: ceil(chars / 4) + 3 per message (a non-empty
    system prompt counts as a message)."""
    return tokens(sum(len(t) for t in texts)) + 3 * messages
