import pytest

from hicra.models.loaders import load_tokenizer
from hicra.tasks import DEFAULT_INSTRUCTION, build_chat_prompt


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("bundled://smollm2-135m-instruct")


def test_chat_prompt_holds_question_and_ends_with_generation_prompt(tokenizer):
    prompt = build_chat_prompt(tokenizer, "What is 3 + 4?", DEFAULT_INSTRUCTION)
    assert f"What is 3 + 4?\n\n{DEFAULT_INSTRUCTION}" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "You are a helpful AI assistant named SmolLM" in prompt  # the template's default system line


def test_system_prompt_replaces_the_default(tokenizer):
    prompt = build_chat_prompt(tokenizer, "Q?", "Box it.", system_prompt="Be terse.")
    assert prompt.startswith("<|im_start|>system\nBe terse.<|im_end|>")
    assert "SmolLM" not in prompt


class NoTemplate:
    chat_template = None


def test_plain_text_fallback_without_chat_template():
    assert build_chat_prompt(NoTemplate(), "Q?", "Box it.") == "Q?\n\nBox it.\n"
