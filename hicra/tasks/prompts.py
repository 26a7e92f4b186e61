"""Turn a question into the exact text the policy is asked to continue."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

from hicra.errors import ConfigError

# Worked examples before the question: [{"question": ..., "answer": ...}, ...] (the `demonstrations` setting), or None
Demonstrations = Sequence[Mapping[str, str]] | None

# Put where an over-long question was cut, so neither the model nor a reader of the completions takes the tail for
# the whole question.
CUT_MARKER = "[...] "
# Characters a token spans at most, taken as a bound so that an over-long question is never tokenised whole (a 10 MB
# question costs seconds): one longer than max_tokens x this cannot fit, and only that many characters of its tail
# are tokenised. English BPE averages ~4; 32 leaves room for the longest tokens (runs of spaces or dashes), so the
# token budget, not this bound, decides where the cut falls.
_MAX_CHARS_PER_TOKEN = 32


def build_chat_prompt(tokenizer, question: str, instruction: str, system_prompt: str | None = None,
                      max_tokens: int | None = None, budget_key: str = "rollout.max_prompt_tokens",
                      demonstrations: Demonstrations = None) -> str:
    """Render one user turn (question, blank line, instruction) ready for generation.

    `demonstrations` (the `demonstrations` setting): worked examples shown as earlier turns of the same chat, each a
    user turn rendered as a real question is (question, instruction) and the assistant's reply. A small instruct model
    copies the form of a reply it has already "given" far more readily than one described in the system message.

    Uses the tokenizer's chat template with the assistant generation prompt appended, so the completion is
    the assistant's reply. `system_prompt=None` adds no system message, which leaves the template's own
    default in place (SmolLM2's template then inserts its standard system line). A tokenizer without a chat
    template (a base model) gets the plain text ``question\\n\\ninstruction\\n``.

    `max_tokens` (the sampler's ``rollout.max_prompt_tokens``): a prompt that would be longer keeps the template,
    the system prompt and the instruction whole and cuts the question from the left, behind `CUT_MARKER`. Cut, not
    refused: prompts are rendered batch by batch, so refusing would stop a run at whichever step first draws a long
    question; and the tokenizer's own truncation cuts from the right, which removes the instruction and the
    assistant header (the model then continues the user's text and is scored on a format it was never asked for).
    The end of a question is where its ask usually is ("... What is x?"). `budget_key` is the setting that gave
    `max_tokens`, as the warning and the error name it (hicra-eval's own is `max_prompt_tokens`).
    """
    if max_tokens is None:
        return _render(tokenizer, question, instruction, system_prompt, demonstrations)
    if len(question) <= max_tokens * _MAX_CHARS_PER_TOKEN:  # longer ones cannot fit: never tokenised whole
        prompt = _render(tokenizer, question, instruction, system_prompt, demonstrations)
        if count_tokens(tokenizer, prompt) <= max_tokens:
            return prompt
    warnings.warn(f"a question longer than {budget_key} allows was cut from the left to fit (the chat "
                  "template and the instruction are kept whole)", stacklevel=2)
    tail = _question_tail(tokenizer, question, instruction, system_prompt, max_tokens, budget_key, demonstrations)
    return _render(tokenizer, tail, instruction, system_prompt, demonstrations)


def check_prompt_room(tokenizer, instruction: str, system_prompt: str | None, max_tokens: int,
                      budget_key: str = "rollout.max_prompt_tokens", demonstrations: Demonstrations = None) -> int:
    """Tokens left for a question once the template, system prompt, demonstrations, instruction and `CUT_MARKER`
    take theirs; a one-line ConfigError when none are."""
    frame = count_tokens(tokenizer, _render(tokenizer, CUT_MARKER, instruction, system_prompt, demonstrations))
    if frame >= max_tokens:
        raise ConfigError(f"{budget_key}={max_tokens} leaves no room for a question: the chat template, system "
                          f"prompt, demonstrations and instruction alone take {frame} tokens; allowed: a value above "
                          f"{frame}")
    return max_tokens - frame


def count_tokens(tokenizer, text: str) -> int:
    """Tokens of `text` as the samplers tokenise a prompt (no special tokens added: the template has them)."""
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def _user_text(question: str, instruction: str) -> str:
    return f"{question}\n\n{instruction}" if instruction else question


def _render(tokenizer, question: str, instruction: str, system_prompt: str | None,
            demonstrations: Demonstrations = None) -> str:
    shots = list(demonstrations or ())
    if getattr(tokenizer, "chat_template", None) is None:  # a base model: the examples as plain text before it
        solved = "".join(f"{_user_text(d['question'], instruction)}\n{d['answer']}\n\n" for d in shots)
        return solved + _user_text(question, instruction) + "\n"
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    for shot in shots:
        messages += [{"role": "user", "content": _user_text(shot["question"], instruction)},
                     {"role": "assistant", "content": shot["answer"]}]
    messages.append({"role": "user", "content": _user_text(question, instruction)})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _question_tail(tokenizer, question: str, instruction: str, system_prompt: str | None, max_tokens: int,
                   budget_key: str, demonstrations: Demonstrations = None) -> str:
    """`CUT_MARKER` + the longest tail of `question` whose rendered prompt fits `max_tokens`."""
    room = check_prompt_room(tokenizer, instruction, system_prompt, max_tokens, budget_key, demonstrations)
    ids = tokenizer(question[-room * _MAX_CHARS_PER_TOKEN:], add_special_tokens=False).input_ids
    keep = min(len(ids), room)
    while True:  # tokens can merge across the marker and the template: shorten until the whole prompt fits
        # a cut through a multi-byte character decodes to U+FFFD: not part of the question
        kept = tokenizer.decode(ids[len(ids) - keep:], clean_up_tokenization_spaces=False) if keep else ""
        tail = CUT_MARKER + kept.lstrip("\ufffd")
        excess = count_tokens(tokenizer, _render(tokenizer, tail, instruction, system_prompt, demonstrations)) - \
            max_tokens
        if excess <= 0:  # keep = 0 always fits: check_prompt_room measured exactly that prompt
            return tail
        keep = max(keep - excess, 0)
