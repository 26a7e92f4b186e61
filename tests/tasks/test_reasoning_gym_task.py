import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hicra.errors import ConfigError
from hicra.tasks import ReasoningGymTask

EASY_CHAIN_SUM = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


@pytest.fixture(scope="module")
def chain_sum():
    return ReasoningGymTask("chain_sum", train_size=300, val_size=32, seed=3, **EASY_CHAIN_SUM)


def test_sizes_and_held_out_validation(chain_sum):
    train, val = chain_sum.train_examples(), chain_sum.val_examples()
    assert 0 < len(train) <= 300 and len(val) == 32
    assert not {ex.question for ex in train} & {ex.question for ex in val}
    assert len({ex.question for ex in val}) == len(val)
    assert chain_sum.name == "chain_sum"


def test_difficulty_is_applied(chain_sum):
    for ex in chain_sum.train_examples():
        terms = ex.meta["entry"]["metadata"]["expression"].split()
        assert len(terms) == 3  # two terms and one operator
        assert all(len(term) <= 2 for term in terms[::2])


def test_same_seed_same_data_and_cached(chain_sum):
    again = ReasoningGymTask("chain_sum", train_size=300, val_size=32, seed=3, **EASY_CHAIN_SUM)
    assert [e.question for e in again.val_examples()] == [e.question for e in chain_sum.val_examples()]
    assert chain_sum.train_examples() is chain_sum.train_examples()


def test_validation_is_held_out_when_the_space_is_small():
    # 1-digit a+b / a-b has only 200 distinct questions: 2,000 training items cover them all, so validation
    # questions are chosen first and removed from training (the embedded default's setting).
    task = ReasoningGymTask("chain_sum", train_size=2000, val_size=32, min_terms=2, max_terms=2, max_digits=1)
    train = {ex.question for ex in task.train_examples()}
    val = task.val_examples()
    assert len(val) == 32 and len(train) > 100 and not train & {ex.question for ex in val}


def test_chain_sum_scoring(chain_sum):
    ex = chain_sum.train_examples()[0]
    assert chain_sum.score(f"Adding up... so the result is \\boxed{{{ex.answer}}}.", ex) == 1.0
    assert chain_sum.score(f"\\boxed{{{int(ex.answer) + 1}}}", ex) == 0.0
    assert chain_sum.score(f"The answer is {ex.answer}.", ex) == 0.0  # no box, no reward


@pytest.mark.parametrize(
    ("dataset", "difficulty"),
    [
        ("basic_arithmetic", {"min_terms": 2, "max_terms": 3, "operators": ["+", "-"]}),
        ("gsm_symbolic", {}),
        ("countdown", {"min_numbers": 3, "max_numbers": 4}),
    ],
)
def test_other_datasets_score_their_reference_answer(dataset, difficulty):
    task = ReasoningGymTask(dataset, train_size=4, val_size=2, **difficulty)
    for ex in task.train_examples() + task.val_examples():
        assert task.score(f"Done. \\boxed{{{ex.answer}}}", ex) == 1.0
        assert task.score("I don't know", ex) == 0.0
        assert task.score("\\boxed{-123456789}", ex) < 1.0


def test_hydra_instantiate_with_top_level_difficulty():
    cfg = OmegaConf.create(
        {
            "seed": 1,
            "task": {
                "_target_": "hicra.tasks.ReasoningGymTask",
                "dataset": "basic_arithmetic",
                "train_size": 5,
                "val_size": 2,
                "seed": "${seed}",
                "operators": ["+", "*"],  # arrives as a ListConfig
            },
        }
    )
    task = instantiate(cfg.task)
    assert task.seed == 1
    assert len(task.train_examples()) == 5
    assert all("/" not in ex.question and " - " not in ex.question for ex in task.train_examples())


def test_unknown_dataset_names_alternatives():
    with pytest.raises(ConfigError, match=r"unknown reasoning-gym dataset 'chain_summ'.*chain_sum") as err:
        ReasoningGymTask("chain_summ")
    assert "\n" not in str(err.value)


def test_unknown_difficulty_option_lists_allowed_ones():
    with pytest.raises(ConfigError, match=r"'num_terms'.*allowed: min_terms, max_terms, min_digits, max_digits"):
        ReasoningGymTask("chain_sum", num_terms=3)
    with pytest.raises(ConfigError, match="option 'size'"):
        ReasoningGymTask("chain_sum", size=3)


def test_rejected_difficulty_value():
    with pytest.raises(ConfigError, match=r"rejects min_terms=5, max_terms=2: max_terms must be >= min_terms"):
        ReasoningGymTask("chain_sum", min_terms=5, max_terms=2)


@pytest.mark.parametrize(("train_size", "val_size"), [(0, 4), (10, -1)])
def test_bad_sizes(train_size, val_size):
    with pytest.raises(ConfigError, match="size"):
        ReasoningGymTask("chain_sum", train_size=train_size, val_size=val_size)


def test_shipped_basic_arithmetic_answers_the_expression_it_shows(compose_cfg):
    """Every gold answer equals the shown expression evaluated with the usual precedence (Python's), so the reward
    pays for arithmetic, not for guessing how the generator grouped the terms."""
    import reasoning_gym
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(compose_cfg("task=basic_arithmetic").task)
    difficulty = {k: v for k, v in node.items() if k not in ("_target_", "dataset", "train_size", "val_size", "seed",
                                                             "instruction", "last_number_fallback")}
    data = reasoning_gym.create_dataset("basic_arithmetic", size=300, seed=node["seed"], **difficulty)
    wrong = [(e["metadata"]["expression"], e["answer"]) for e in data
             if abs(eval(e["metadata"]["expression"]) - float(e["answer"])) > 1e-9]  # digits and + - * / ( ) only
    assert wrong == []
