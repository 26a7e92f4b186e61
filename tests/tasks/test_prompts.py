import time

import pytest

from hicra.errors import ConfigError
from hicra.models.loaders import load_tokenizer
from hicra.tasks import DEFAULT_INSTRUCTION, build_chat_prompt
from hicra.tasks.prompts import CUT_MARKER, check_prompt_room, count_tokens


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


SHOTS = [{"question": "1 + 2 =", "answer": "The answer is \\boxed{3}."},
         {"question": "4 + 5 + 1 =", "answer": "Step by step: 4 + 5 = 9, 9 + 1 = 10. The answer is \\boxed{10}."}]


def test_demonstrations_are_earlier_turns_of_the_chat_in_order(tokenizer):
    prompt = build_chat_prompt(tokenizer, "7 + 7 =", "Box it.", system_prompt="Be terse.", demonstrations=SHOTS)
    assert prompt == ("<|im_start|>system\nBe terse.<|im_end|>\n"
                      "<|im_start|>user\n1 + 2 =\n\nBox it.<|im_end|>\n"
                      "<|im_start|>assistant\nThe answer is \\boxed{3}.<|im_end|>\n"
                      "<|im_start|>user\n4 + 5 + 1 =\n\nBox it.<|im_end|>\n"
                      "<|im_start|>assistant\nStep by step: 4 + 5 = 9, 9 + 1 = 10. The answer is \\boxed{10}.<|im_end|>\n"
                      "<|im_start|>user\n7 + 7 =\n\nBox it.<|im_end|>\n<|im_start|>assistant\n")
    assert build_chat_prompt(NoTemplate(), "7 + 7 =", "Box it.", demonstrations=SHOTS[:1]) == \
        "1 + 2 =\n\nBox it.\nThe answer is \\boxed{3}.\n\n7 + 7 =\n\nBox it.\n"


def test_demonstrations_count_against_the_prompt_budget(tokenizer):
    plain = check_prompt_room(tokenizer, "Box it.", None, 400)
    with_shots = check_prompt_room(tokenizer, "Box it.", None, 400, demonstrations=SHOTS)
    shots_only = count_tokens(tokenizer, build_chat_prompt(tokenizer, "x", "Box it.", demonstrations=SHOTS)) - \
        count_tokens(tokenizer, build_chat_prompt(tokenizer, "x", "Box it."))
    assert plain - with_shots == shots_only > 40
    with pytest.raises(ConfigError, match="system prompt, demonstrations and instruction alone take"):
        check_prompt_room(tokenizer, "Box it.", None, shots_only, demonstrations=SHOTS)
    cut = build_chat_prompt(tokenizer, "9 + " * 200 + "1 =", "Box it.", max_tokens=plain - 100 + 40 + shots_only,
                            demonstrations=SHOTS)
    assert CUT_MARKER in cut and "Step by step: 4 + 5 = 9" in cut  # the question is cut, the examples kept whole


# --- over-long questions: cut from the left, the template and the instruction kept whole ---

SYSTEM = "Solve the arithmetic problem."


def test_a_prompt_that_fits_is_left_alone(tokenizer):
    whole = build_chat_prompt(tokenizer, "What is 3 + 4?", DEFAULT_INSTRUCTION, SYSTEM)
    assert build_chat_prompt(tokenizer, "What is 3 + 4?", DEFAULT_INSTRUCTION, SYSTEM, max_tokens=512) == whole
    exact = count_tokens(tokenizer, whole)
    assert build_chat_prompt(tokenizer, "What is 3 + 4?", DEFAULT_INSTRUCTION, SYSTEM, max_tokens=exact) == whole


@pytest.mark.parametrize("filler", ["Some context. ", "数学很有趣。", " " * 50 + "-" * 50])
@pytest.mark.parametrize("max_tokens", [64, 200])
def test_an_over_long_question_keeps_its_end_and_the_whole_template(tokenizer, filler, max_tokens):
    question = filler * 2000 + "What is 3 + 4?"
    prompt = build_chat_prompt(tokenizer, question, DEFAULT_INSTRUCTION, SYSTEM, max_tokens=max_tokens)
    assert count_tokens(tokenizer, prompt) <= max_tokens
    assert prompt.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{CUT_MARKER}")
    assert prompt.endswith(f"What is 3 + 4?\n\n{DEFAULT_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n")
    assert "\ufffd" not in prompt  # a cut through a multi-byte character leaves no replacement character
    # as much of the question as fits: one more token of it would not
    kept = prompt.split(CUT_MARKER, 1)[1].split(f"\n\n{DEFAULT_INSTRUCTION}")[0]
    assert len(kept) < len(question) and question.endswith(kept)
    room = check_prompt_room(tokenizer, DEFAULT_INSTRUCTION, SYSTEM, max_tokens)
    assert count_tokens(tokenizer, kept) >= room - 4  # tokens merge differently at the two seams


def test_a_10_mb_question_is_never_tokenised_whole(tokenizer):
    start = time.perf_counter()
    prompt = build_chat_prompt(tokenizer, "x + " * 2_500_000 + "1 = ?", DEFAULT_INSTRUCTION, max_tokens=512)
    assert time.perf_counter() - start < 5.0  # tokenising all 10 MB would take longer than that
    assert count_tokens(tokenizer, prompt) <= 512 and "1 = ?" in prompt


def test_a_budget_the_template_alone_overflows_is_a_one_line_config_error(tokenizer):
    frame = count_tokens(tokenizer, build_chat_prompt(tokenizer, CUT_MARKER, DEFAULT_INSTRUCTION, SYSTEM))
    with pytest.raises(ConfigError) as err:
        build_chat_prompt(tokenizer, "What is 3 + 4? " * 100, DEFAULT_INSTRUCTION, SYSTEM, max_tokens=frame)
    assert str(err.value) == (f"rollout.max_prompt_tokens={frame} leaves no room for a question: the chat template, "
                              f"system prompt, demonstrations and instruction alone take {frame} tokens; allowed: a "
                              f"value above {frame}")


def test_the_cut_and_its_error_name_the_caller_s_setting(tokenizer):
    """hicra-eval's budget is `max_prompt_tokens`, not training's `rollout.max_prompt_tokens`."""
    with pytest.warns(UserWarning, match="^a question longer than max_prompt_tokens allows"):
        build_chat_prompt(tokenizer, "x " * 2000, DEFAULT_INSTRUCTION, max_tokens=128, budget_key="max_prompt_tokens")
    with pytest.raises(ConfigError, match="^max_prompt_tokens=8 leaves no room for a question"):
        build_chat_prompt(tokenizer, "x " * 2000, DEFAULT_INSTRUCTION, max_tokens=8, budget_key="max_prompt_tokens")
