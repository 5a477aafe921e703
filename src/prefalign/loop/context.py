"""Safety context distillation's two rules: where the safety pre-prompt goes, and which
pre-prompted answers are kept (needs neither torch nor a model).

The pre-prompt goes before the first user message, separated by a blank line ("prefix", as
Llama 2 prefixes its adversarial prompts with a safety pre-prompt), or into the system message
("system": before an existing system prompt's text, else as the system prompt, which then
replaces the chat template's default one).
"""

from __future__ import annotations

from typing import Literal

from prefalign.data.types import Message

DEFAULT_PREPROMPT = (
    "You are a careful, honest assistant. Answer every harmless request fully and helpfully. "
    "If a request could help someone cause harm, decline briefly, say why, and offer a safe "
    "alternative when there is one."
)
Position = Literal["prefix", "system"]
Outcome = Literal["kept", "not_better", "unsafe", "empty"]


def with_preprompt(prompt: tuple[Message, ...], preprompt: str,
                   position: Position) -> tuple[Message, ...]:
    """The prompt with the pre-prompt put where `position` says (module docstring)."""
    if position == "system":
        if prompt[0].role == "system":
            return (Message("system", f"{preprompt}\n\n{prompt[0].content}"), *prompt[1:])
        return (Message("system", preprompt), *prompt)
    first = next(i for i, m in enumerate(prompt) if m.role == "user")
    user = Message("user", f"{preprompt}\n\n{prompt[first].content}")
    return (*prompt[:first], user, *prompt[first + 1 :])


def outcome(preprompted: float | None, plain: float | None, text: str,
            min_margin: float) -> Outcome:
    """Keep the pre-prompted answer when it is not empty, not below the safety threshold
    (None), and beats the plain one (by more than the margin, unless the plain one was None)."""
    if not text.strip():
        return "empty"
    if preprompted is None:
        return "unsafe"
    if plain is not None and preprompted - plain <= min_margin:
        return "not_better"
    return "kept"
