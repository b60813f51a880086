"""What one streamed OpenAI-compatible response said, choice by choice (:mod:`.openai_http`):
completions ``text`` or chat ``delta`` events, reasoning-parser fields re-joined with the
content, finish reasons and the server's token counts; and a server's own words from an error body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional

@dataclass
class Stream:
    """What one streamed response said, choice by choice."""

    texts: Dict[int, List[str]] = field(default_factory=dict)
    reasoning: Dict[int, List[str]] = field(default_factory=dict)
    #: the server closed the stream itself with ``data: [DONE]``
    done: bool = False
    finish: Dict[int, str] = field(default_factory=dict)
    #: the server's running token count of each choice (continuous usage stats)
    choice_tokens: Dict[int, int] = field(default_factory=dict)
    usage: Optional[dict] = None

    def add(self, event: dict, chat: bool) -> None:
        choices = event.get("choices") or ()
        usage = event.get("usage")
        if usage:
            self.usage = usage
            if len(choices) == 1 and usage.get("completion_tokens") is not None:
                self.choice_tokens[int(choices[0].get("index", 0))] = int(usage["completion_tokens"])
        for choice in choices:
            index = int(choice.get("index", 0))
            texts, reasoning = self.texts.setdefault(index, []), self.reasoning.setdefault(index, [])
            if chat:
                delta = choice.get("delta") or {}
                thought = delta.get("reasoning_content") or delta.get("reasoning")
                if thought:
                    reasoning.append(thought)
                texts.append(delta.get("content") or "")
            else:
                texts.append(choice.get("text") or "")
            if choice.get("finish_reason"):
                self.finish[index] = choice["finish_reason"]


def join_reasoning(reasoning: str, content: str, finish_reason: Optional[str]) -> str:
    """One response text from a reasoning parser's two fields (see the module docstring)."""
    if not reasoning:
        return content
    if not content and finish_reason == "length":
        return "<think>" + reasoning  # the budget ran out inside the thought: no answer
    return reasoning + "</think>" + content


def server_message(raw: str) -> str:
    """The server's own words from an error body (OpenAI ``error.message``, FastAPI ``detail``, …)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return " ".join(raw.split())[:300] or "(empty body)"
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value
            if value:
                text = value if isinstance(value, str) else json.dumps(value)
                return " ".join(text.split())[:300]
    return " ".join(raw.split())[:300]
