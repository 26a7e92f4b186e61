"""The GPU-shaped decoding path (stop checks every k tokens), run on CPU: how often it reads the device, that it
samples what the eager path samples (bit for bit while no row has stopped, in distribution after), and that its
ids / pad / log-prob layout is the eager path's.

A CUDA sync cannot be seen on CPU, so `HostReads` counts the calls that make the host wait for a device value
(`bool(t)`, `int(t)`, `.item()`, `.tolist()`, `.nonzero()`, boolean-mask indexing, ...: what
torch.cuda.set_sync_debug_mode flags), keyed by how many forwards the model has run. The model's own forward is not
counted (transformers' code, not the loop's; it steps out of the mode, which also keeps the test fast).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch
from scipy.stats import chisquare
from support import sharpened_tiny_model
from torch.overrides import TorchFunctionMode
from transformers import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from hicra.models.cache_compat import CACHE_NAME
from hicra.rollout.decode import GPU_STOP_CHECK_EVERY, decode, filter_logits, stop_check_interval

READS = {"__bool__", "__int__", "__float__", "__index__", "item", "tolist", "nonzero", "unique", "masked_select",
         "numpy", "cpu"}


def _is_host_read(name: str, args: tuple) -> bool:
    if name in READS:
        return True
    index = args[1] if name in ("__getitem__", "__setitem__") and len(args) > 1 else None
    index = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)  # mask indexing: a nonzero


class HostReads(TorchFunctionMode):
    """Counts host reads of tensor values outside the model: `after[n]` between the model's forwards n and n+1."""

    def __init__(self):
        super().__init__()
        self.forwards, self.after = 0, Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if _is_host_read(getattr(func, "__name__", ""), args):
            self.after[self.forwards] += 1
        return func(*args, **(kwargs or {}))

    def counting(self, model):
        """`model`, each forward numbered and run outside this mode."""
        reads = self

        class Counted:
            config = model.config

            def __call__(self, *args, **kwargs):
                reads.forwards += 1
                reads.__exit__(None, None, None)
                try:
                    return model(*args, **kwargs)
                finally:
                    reads.__enter__()

        return Counted()


@pytest.fixture(scope="module")
def tiny():
    return sharpened_tiny_model()


PROMPTS = ["What is 2 + 2?", "Compute the sum of the first three odd numbers."]


def _encode(tokenizer, prompts):
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    return enc.input_ids, enc.attention_mask


def test_the_interval_follows_the_device():
    assert stop_check_interval(torch.device("cpu")) == 1  # the eager loop: CPU samples as before
    assert stop_check_interval(torch.device("cuda", 0)) == GPU_STOP_CHECK_EVERY == 8
    with pytest.raises(ValueError, match="stop_check_every=0"):
        decode(None, torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2), 1, 4, [0], 0, stop_check_every=0)


def test_checked_path_reads_the_host_once_per_check_and_the_eager_path_several_times_per_token(tiny):
    ids, mask = _encode(tiny.tokenizer, PROMPTS)
    pad, T, k = tiny.tokenizer.pad_token_id, 16, 4
    torch.manual_seed(0)
    probe = decode(tiny.model, ids, mask, 4, T, [-1], pad, top_p=0.9, stop_check_every=k)
    eos = sorted({int(probe[0, 2]), int(probe[5, 9])})  # rows stop at different steps: drops happen
    per_path = {}
    for every in (1, k):
        reads = HostReads()
        torch.manual_seed(0)
        with reads:
            out = decode(reads.counting(tiny.model), ids, mask, 4, T, eos, pad, top_p=0.9, stop_check_every=every)
        steps = range(2, reads.forwards + 1)  # forward 1 prefills the prompts; forward t+2 decodes reply token t
        per_path[every] = [reads.after[n] for n in steps], out
        assert reads.after[0] == reads.after[1] == 0  # nothing read while setting up
    checked, out = per_path[k]
    assert torch.isin(out, torch.tensor(eos)).any(dim=1).sum() >= 2  # rows stopped (and were dropped) early
    # one read after every k-th token (the live-row count), one at the end (the reply width), none in between
    assert checked == [1 if (t + 1) % k == 0 or t == len(checked) - 1 else 0 for t in range(len(checked))]
    assert sum(checked) <= math.ceil(T / k) + 1
    eager, _ = per_path[1]
    assert min(eager) >= 3  # all stopped? any stopped? and top-p's candidate check: the reads the GPU path removes


def test_checked_path_equals_the_eager_path_while_no_row_stops(tiny):
    """Same seed, no row stops (EOS forbidden throughout): the same uniforms reach the same rows, and top-p's full
    sort keeps the nucleus the candidate search finds, so both paths give the same tokens and log-probs."""
    ids, mask = _encode(tiny.tokenizer, PROMPTS)
    pad, T = tiny.tokenizer.pad_token_id, 10
    for kwargs in ({"top_p": 0.9}, {"top_k": 5, "temperature": 0.7}, {"top_p": 0.6, "top_k": 50}):
        runs = []
        for every in (1, 3):
            torch.manual_seed(4)
            runs.append(decode(tiny.model, ids, mask, 4, T, [pad], pad, min_new_tokens=T, return_logprobs=True,
                               stop_check_every=every, **kwargs))
        (eager_ids, eager_lp), (checked_ids, checked_lp) = runs
        assert torch.equal(checked_ids, eager_ids), kwargs
        assert torch.allclose(checked_lp, eager_lp, atol=1e-5), kwargs


def test_checked_samples_do_not_depend_on_when_rows_leave(tiny):
    """One uniform per original row at every step: checking every 2, 3 or 8 tokens drops rows at different steps
    and gives the same replies for a seed."""
    ids, mask = _encode(tiny.tokenizer, PROMPTS)
    pad, T = tiny.tokenizer.pad_token_id, 14
    torch.manual_seed(1)
    probe = decode(tiny.model, ids, mask, 4, T, [-1], pad, top_k=4, stop_check_every=2)
    eos = sorted({int(probe[0, 2]), int(probe[5, 5]), int(probe[7, 10])})
    runs = []
    for every in (2, 3, 8):
        torch.manual_seed(1)
        runs.append(decode(tiny.model, ids, mask, 4, T, eos, pad, top_k=4, return_logprobs=True,
                           stop_check_every=every))
    assert torch.isin(runs[0][0], torch.tensor(eos)).any(dim=1).sum() >= 3
    for got_ids, got_lp in runs[1:]:
        assert torch.equal(got_ids, runs[0][0])
        assert torch.allclose(got_lp, runs[0][1], atol=1e-5)


# --- a 4-token Markov "model": its reply distribution is known exactly ---

CONTENT, EOS, PAD = (0, 1), 2, 3  # PAD is never drawn (probability 0) and differs from EOS, so the layout shows


class MarkovLM(torch.nn.Module):
    """Next-token logits depend only on the last token: log TABLE[token]. Ignores the cache (left empty)."""

    config = None
    TABLE = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.2, 0.4, 0.4, 0.0], [0.6, 0.3, 0.1, 0.0], [0.3, 0.3, 0.4, 0.0]])

    def forward(self, input_ids, **kwargs):
        logits = self.TABLE.log()[input_ids]  # (b, L, V)
        return CausalLMOutputWithPast(logits=logits, **{CACHE_NAME: DynamicCache()})


def _step_logits(previous: int, t: int, min_new_tokens: int) -> torch.Tensor:
    logits = MarkovLM.TABLE.log()[previous].clone()  # (V,)
    if t < min_new_tokens:
        logits[EOS] = -math.inf
    return logits


def _exact_replies(first: int, T: int, temperature: float, top_p: float, min_new_tokens: int) -> dict:
    """Probability of each reply (tokens up to its EOS, or T tokens) under the sampling rule."""
    probs = {}
    for length in range(1, T + 1):
        for reply in itertools.product([*CONTENT, EOS], repeat=length):
            if EOS in reply[:-1] or (length < T and reply[-1] != EOS):
                continue
            p, previous = 1.0, first
            for t, token in enumerate(reply):
                filtered = filter_logits(_step_logits(previous, t, min_new_tokens)[None] / temperature, top_p=top_p)
                p *= float(filtered.softmax(-1)[0, token])
                previous = token
            probs[reply] = p
    return probs


@pytest.mark.parametrize("every", [1, 2], ids=["eager", "checked"])
def test_replies_follow_the_exact_distribution_with_the_eager_layout(every):
    T, n, temperature, top_p, min_new = 4, 6000, 1.3, 0.9, 1
    prompt = torch.tensor([[PAD, 0]])  # (1, 2): prefill one token, feed token 0
    torch.manual_seed(0)
    ids, logprobs = decode(MarkovLM(), prompt, torch.tensor([[0, 1]]), n, T, [EOS], PAD, temperature=temperature,
                           top_p=top_p, min_new_tokens=min_new, return_logprobs=True, stop_check_every=every)
    replies = []
    for row, row_lp in zip(ids.tolist(), logprobs):
        end = row.index(EOS) + 1 if EOS in row else len(row)
        reply = tuple(row[:end])
        replies.append(reply)
        assert row[end:] == [PAD] * (len(row) - end) and (row_lp[end:] == 0).all()  # pad and 0 after the EOS
        previous = [0, *reply[:-1]]  # the sampler's log-prob of each token: before top-p, EOS forbidden before 1
        expected = [(_step_logits(p, t, min_new) / temperature).log_softmax(-1)[tok] for t, (p, tok) in
                    enumerate(zip(previous, reply))]
        assert torch.allclose(row_lp[:end], torch.stack(expected), atol=1e-5)
    assert ids.shape[1] == max(map(len, replies))  # width: the longest reply, as the eager loop returns
    exact = _exact_replies(0, T, temperature, top_p, min_new)
    counts = Counter(replies)
    assert set(counts) <= {r for r, p in exact.items() if p > 0}  # nothing top-p or min_new_tokens forbids
    support = [r for r, p in exact.items() if p > 0]
    observed = [counts[r] for r in support]
    total = sum(exact[r] for r in support)  # 1 up to float32 rounding, which chisquare would refuse
    expected = [exact[r] / total * n for r in support]
    assert len(support) > 15 and min(expected) > 5  # a real test: many replies, each expected several times
    assert chisquare(observed, expected).pvalue > 1e-3
