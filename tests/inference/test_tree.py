"""The catalogue token tree against the model's own forward passes: same scores, same top-K."""

from __future__ import annotations

import random

import pytest
import torch

from recgpt.inference.decoding import score_candidates
from recgpt.inference.tree import CandidateTree, score_tree, top_k_tree, tree_supported
from tests.training.test_tiny_model import tiny_mpt

EOS, PAD = 3, 0


def catalogue(seed: int, count: int) -> list[list[int]]:
    """Distinct candidates that share leading tokens the way item lines do (``Title: ...``), each ending in EOS."""
    rng = random.Random(seed)
    lines: set[tuple[int, ...]] = set()
    while len(lines) < count:
        head = [7, 8] if rng.random() < 0.8 else [9]
        lines.add((*head, rng.choice([10, 11, 12]), *(rng.randrange(13, 64) for _ in range(rng.randrange(0, 5))), EOS))
    return [list(line) for line in sorted(lines)]


@pytest.fixture(scope="module")
def model():
    return tiny_mpt(64).eval()


def test_tree_shares_prefixes_and_keeps_each_candidate_end():
    tree = CandidateTree.build([[5, 6, 0], [5, 7, 0], [5, 6, 0], [8]])
    assert tree.tokens.tolist() == [5, 6, 0, 7, 0, 8]
    assert tree.ends == [2, 4, 2, 5]  # the repeated candidate shares its end node
    assert tree.depth.tolist() == [0, 1, 2, 1, 2, 0]
    assert tree.has_children.tolist() == [True, True, False, True, False, False]
    assert tree.path[4][tree.on_path[4]].tolist() == [0, 3, 4]
    with pytest.raises(ValueError, match="candidate 1 has no tokens"):
        CandidateTree.build([[5], []])


@pytest.mark.parametrize("prompt_length", [1, 9, 40])
def test_tree_scores_equal_scoring_each_candidate_on_the_prompt_cache(model, prompt_length):
    assert tree_supported(model) is None
    rng = random.Random(prompt_length)
    prompt = [rng.randrange(4, 64) for _ in range(prompt_length)]
    lines = catalogue(prompt_length, 150)
    expected = score_candidates(model, prompt, lines, pad_id=PAD)
    found = score_tree(model, prompt, CandidateTree.build(lines))
    assert found.tolist() == pytest.approx(expected, abs=1e-4)


def test_tree_scores_equal_full_forward_passes(model):
    prompt, lines = [5, 9, 14, 3, 22], catalogue(1, 20)
    found = score_tree(model, prompt, CandidateTree.build(lines))
    for line, score in zip(lines, found.tolist(), strict=True):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + line])).logits[0]
        logprobs = torch.log_softmax(logits, dim=-1)
        total = sum(float(logprobs[len(prompt) - 1 + i, token]) for i, token in enumerate(line))
        assert score == pytest.approx(total, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_first_top_k_is_the_top_of_the_full_ranking(model, seed):
    rng = random.Random(seed)
    prompt = [rng.randrange(4, 64) for _ in range(12)]
    lines = catalogue(seed, 200)
    tree = CandidateTree.build(lines)
    allowed = torch.tensor([rng.random() < 0.7 for _ in lines])
    full = score_tree(model, prompt, tree)
    ranked = [i for i in full.argsort(descending=True).tolist() if allowed[i]]
    found = top_k_tree(model, prompt, tree, 10, allowed)
    assert [i for i, _ in found] == ranked[:10]
    assert [score for _, score in found] == pytest.approx([float(full[i]) for i in ranked[:10]], abs=1e-4)


def test_top_k_with_fewer_allowed_candidates_than_k(model):
    lines = catalogue(3, 30)
    allowed = torch.zeros(len(lines), dtype=torch.bool)
    allowed[[4, 17]] = True
    found = top_k_tree(model, [5, 6], CandidateTree.build(lines), 10, allowed)
    assert sorted(i for i, _ in found) == [4, 17]
    assert top_k_tree(model, [5, 6], CandidateTree.build(lines), 10, torch.zeros(len(lines), dtype=torch.bool)) == []


def test_models_the_tree_cannot_run_are_named():
    assert "not an MPT model" in str(tree_supported(torch.nn.Linear(2, 2)))
