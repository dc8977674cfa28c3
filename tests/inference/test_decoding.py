"""Decoding on a shared prompt cache against Hugging Face's own generate and full forward passes."""

from __future__ import annotations

import random

import pytest
import torch

from recgpt.inference.decoding import beam_search, left_pad, score_candidates
from recgpt.inference.trie import ItemTrie
from tests.training.test_tiny_model import tiny_mpt

PROMPTS = [[5, 9, 14, 3, 22, 7], [40, 41], [8, 8, 8, 30, 31, 2, 17, 12, 19]]


@pytest.fixture(scope="module")
def model():
    return tiny_mpt(64).eval()


@pytest.mark.parametrize("use_tree", [False, True], ids=["batched cache", "token tree"])
def test_beam_search_returns_what_huggingface_beam_search_returns(model, use_tree):
    eos, pad, beams, steps = 3, 0, 4, 6
    ours = beam_search(model, PROMPTS, num_beams=beams, max_new_tokens=steps, eos_id=eos, pad_id=pad, use_tree=use_tree)
    for prompt, found in zip(PROMPTS, ours, strict=True):
        with torch.no_grad():
            output = model.generate(
                input_ids=torch.tensor([prompt]),
                attention_mask=torch.ones((1, len(prompt)), dtype=torch.long),
                num_beams=beams,
                num_return_sequences=beams,
                max_new_tokens=steps,
                early_stopping=True,
                eos_token_id=eos,
                pad_token_id=pad,
                output_scores=True,
                return_dict_in_generate=True,
                use_cache=True,
            )
        theirs = [[t for t in row.tolist()[len(prompt) :] if t not in (eos, pad)] for row in output.sequences]
        assert [beam.tokens for beam in found] == theirs
        assert [beam.score for beam in found] == pytest.approx(output.sequences_scores.tolist(), abs=1e-4)


def test_batched_beam_search_equals_one_prompt_at_a_time(model):
    together = beam_search(model, PROMPTS, num_beams=3, max_new_tokens=5, eos_id=3, pad_id=0, use_tree=False)
    for prompt, found in zip(PROMPTS, together, strict=True):
        alone = beam_search(model, [prompt], num_beams=3, max_new_tokens=5, eos_id=3, pad_id=0, use_tree=False)[0]
        assert [b.tokens for b in found] == [b.tokens for b in alone]
        assert [b.score for b in found] == pytest.approx([b.score for b in alone], abs=1e-4)


@pytest.mark.parametrize("use_tree", [False, True], ids=["batched cache", "token tree"])
def test_constrained_beams_spell_only_allowed_items(model, use_tree):
    items = [("a", [10, 11]), ("b", [10, 12, 13]), ("c", [20]), ("d", [21, 22, 23, 24])]
    trie = ItemTrie(items, eos_id=3)
    excluded = [{"c"}, set(), {"a", "b"}]
    found = beam_search(
        model,
        PROMPTS,
        num_beams=4,
        max_new_tokens=6,
        eos_id=3,
        pad_id=0,
        allowed=lambda row, prefix: trie.allowed(prefix, excluded[row]),
        use_tree=use_tree,
    )
    for row, beams in enumerate(found):
        named = [trie.item(beam.tokens) for beam in beams]
        assert None not in named and len(set(named)) == len(named)
        assert set(named) == {"a", "b", "c", "d"} - excluded[row]


def test_tree_and_cache_beams_agree_on_longer_searches(model):
    prompts = [[(7 * i + j) % 60 + 4 for j in range(12 + i)] for i in range(4)]
    for beams in (2, 10):
        cache = beam_search(model, prompts, num_beams=beams, max_new_tokens=9, eos_id=3, pad_id=0, use_tree=False)
        tree = beam_search(model, prompts, num_beams=beams, max_new_tokens=9, eos_id=3, pad_id=0, use_tree=True)
        for ours, theirs in zip(tree, cache, strict=True):
            assert [b.tokens for b in ours] == [b.tokens for b in theirs]
            assert [b.logprob for b in ours] == pytest.approx([b.logprob for b in theirs], abs=1e-4)


def test_scores_on_the_shared_cache_equal_full_forward_passes(model):
    prompt = PROMPTS[2]
    candidates = [[10, 11, 3], [20, 3], [21, 22, 23, 24, 3], [5]]
    shared = score_candidates(model, prompt, candidates, pad_id=0, batch_size=3)
    for candidate, score in zip(candidates, shared, strict=True):
        ids, mask = left_pad([prompt + candidate], 0)
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[0], dim=-1)
        expected = sum(float(logprobs[len(prompt) - 1 + i, token]) for i, token in enumerate(candidate))
        assert score == pytest.approx(expected, abs=1e-4)


def test_excluded_items_prune_their_branches_so_no_prefix_is_a_dead_end():
    rng = random.Random(3)
    items = [(str(i), [rng.randrange(5, 9) for _ in range(rng.randrange(1, 5))]) for i in range(40)]
    trie = ItemTrie(items, eos_id=3)
    for _ in range(20):
        excluded = trie.exclude({str(i) for i in rng.sample(range(40), 25)})
        reachable, stack = set(), [[]]
        while stack:
            prefix = stack.pop()
            allowed = trie.allowed(prefix, excluded)
            assert allowed, f"dead end at {prefix}"
            for token in allowed:
                if token == 3:
                    reachable.add(trie.item(prefix))
                else:
                    stack.append([*prefix, token])
        assert reachable == set(trie.paths) - excluded.items


@pytest.mark.parametrize("use_tree", [False, True], ids=["batched cache", "token tree"])
def test_barred_free_beams_never_spell_an_excluded_item_and_stay_free_elsewhere(model, use_tree):
    eos = 3
    free = beam_search(model, PROMPTS, num_beams=6, max_new_tokens=5, eos_id=eos, pad_id=0, use_tree=use_tree)
    # the catalogue: every free beam is an item (a few of them extended), and so is one free text's prefix
    lines = {tuple(beam.tokens) for beams in free for beam in beams if beam.tokens}
    items = [(f"i{n}", list(tokens)) for n, tokens in enumerate(sorted(lines))]
    trie = ItemTrie(items, eos_id=eos)
    names = {tuple(tokens): name for name, tokens in items}
    excluded = [trie.exclude({names[tuple(b.tokens)] for b in beams[:2] if b.tokens}) for beams in free]
    barred = beam_search(
        model,
        PROMPTS,
        num_beams=6,
        max_new_tokens=5,
        eos_id=eos,
        pad_id=0,
        barred=lambda row, prefix: trie.barred(prefix, excluded[row]),
        use_tree=use_tree,
    )
    for row, (before, after) in enumerate(zip(free, barred, strict=True)):
        spelled = {trie.item(beam.tokens) for beam in after} - {None}
        assert not spelled & excluded[row].items  # no beam ends as an excluded item
        for beam in after:  # nor is cut off on a prefix that only excluded items continue
            assert all(token not in trie.barred(beam.tokens[:i], excluded[row]) for i, token in enumerate(beam.tokens))
        kept = [b.tokens for b in before if trie.item(b.tokens) not in excluded[row].items]
        assert kept and all(tokens in [b.tokens for b in after] for tokens in kept[:2])  # the best others survive
