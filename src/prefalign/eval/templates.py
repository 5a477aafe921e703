"""Alternate prompt templates, to test whether a policy's preferences survive a change of format.

A policy that only learned to respond to its training template (seed document 000: template
overfit) ranks pairs worse once the same conversations are written another way. The alternate
templates keep the tokenizer's end-of-turn token after each assistant reply, so responses are
labelled and scored exactly as under the model's own template; only the text around them changes.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# "User:" / "Assistant:" turns, no system prompt unless the conversation has one, no special
# tokens except the end of each assistant turn. The reply starts on a new line so that it
# tokenises exactly as under the model's own template (a space after "Assistant:" would merge
# into the reply's first token).
PLAIN = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% else %}Assistant:\n{{ m['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:\n{% endif %}"
)

# Markdown instruction headers, in the style of Alpaca-format fine-tuning data.
INSTRUCTION = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### Instruction:\n{{ m['content'] }}\n\n"
    "{% else %}### Response:\n{{ m['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Response:\n{% endif %}"
)

ALTERNATE_TEMPLATES = {
    "plain": (PLAIN, "'User:' / 'Assistant:' turns, no default system prompt"),
    "instruction": (INSTRUCTION, "'### Instruction:' / '### Response:' headers"),
}


def with_template(tokenizer: PreTrainedTokenizerBase, name: str) -> PreTrainedTokenizerBase:
    """A copy of `tokenizer` whose chat template is the alternate template `name`; the
    end-of-turn token stays the tokenizer's (the eos token must be the template's)."""
    if name not in ALTERNATE_TEMPLATES:
        raise ValueError(f"unknown alternate template {name!r}; choose one of "
                         f"{', '.join(sorted(ALTERNATE_TEMPLATES))}")
    alternate = copy.deepcopy(tokenizer)
    alternate.chat_template = ALTERNATE_TEMPLATES[name][0]
    return alternate
