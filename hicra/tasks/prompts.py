"""Turn a question into the exact text the policy is asked to continue."""

from __future__ import annotations


def build_chat_prompt(tokenizer, question: str, instruction: str, system_prompt: str | None = None) -> str:
    """Render one user turn (question, blank line, instruction) ready for generation.

    Uses the tokenizer's chat template with the assistant generation prompt appended, so the completion is
    the assistant's reply. `system_prompt=None` adds no system message, which leaves the template's own
    default in place (SmolLM2's template then inserts its standard system line). A tokenizer without a chat
    template (a base model) gets the plain text ``question\\n\\ninstruction\\n``.
    """
    user_text = f"{question}\n\n{instruction}" if instruction else question
    if getattr(tokenizer, "chat_template", None) is None:
        return user_text + "\n"
    messages = [{"role": "user", "content": user_text}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
