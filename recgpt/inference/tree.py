"""Likelihood of every catalogue item after one prompt, in one pass over the catalogue's token trie.

``score_candidates`` runs each candidate's tokens on its own copy of the prompt's cache. Candidates share their
prompt and often their leading tokens (``Title: The ...``), so here each distinct prefix is one node of a tree,
computed once: a node attends to the prompt and to its own ancestors (tree attention, the idea of speculative
decoding's token trees), and the logits at a node score every child below it. The result equals summing each
candidate's token log-probabilities one by one (``tests/inference/test_tree.py`` checks it against the model's
own forward), at the cost of the tree's nodes instead of the candidates' tokens, with no cache copies.

It drives MPT (the RecGPT family, llm-foundry's ``MPTForCausalLM`` and its Hugging Face export) through the
model's own modules: embeddings, norms, the fused QKV and output projections and the FFN; only attention is
computed here, with ALiBi (or learned positions) from the model's config, in float32 on CPU (the demo's and the
tests' setting). ``tree_supported`` says whether a model is one of those; callers fall back to
``score_candidates`` otherwise (GPU models today).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

ROWS_PER_CHUNK = 1024  # tree nodes attended (and projected to the vocabulary) at once: bounds the memory


@dataclass(frozen=True)
class CandidateTree:
    """Candidates' token sequences merged into a prefix tree, parents before children.

    Attributes:
        tokens: The token of each node (``[nodes]``).
        parent: Each node's parent node, -1 at depth 0.
        depth: Each node's depth (0: the first token of a candidate).
        ends: For each candidate, the node of its last token (identical candidates share it).
        path: Each node's ancestors from depth 0 down to itself, padded with 0 (``[nodes, max depth + 1]``);
            ``on_path`` marks the real entries.
        has_children: Nodes whose logits score a child (the ones the model runs on).

    Example:
        >>> tree = CandidateTree.build([[5, 6, 0], [5, 7, 0]])
        >>> tree.tokens.tolist(), tree.parent.tolist(), tree.ends, tree.path[2].tolist()
        ([5, 6, 0, 7, 0], [-1, 0, 1, 0, 3], [2, 4], [0, 1, 2])
    """

    tokens: torch.Tensor
    parent: torch.Tensor
    depth: torch.Tensor
    ends: list[int]
    path: torch.Tensor
    on_path: torch.Tensor
    has_children: torch.Tensor

    @classmethod
    def build(cls, candidates: Sequence[Sequence[int]]) -> CandidateTree:
        """Merge candidates (each at least one token) into a tree."""
        index: dict[tuple[int, int], int] = {}
        tokens: list[int] = []
        parent: list[int] = []
        paths: list[list[int]] = []
        ends: list[int] = []
        for number, candidate in enumerate(candidates):
            if not candidate:
                raise ValueError(f"candidate {number} has no tokens")
            node = -1
            for token in candidate:
                child = index.get((node, token))
                if child is None:
                    child = index[(node, token)] = len(tokens)
                    tokens.append(int(token))
                    parent.append(node)
                    paths.append([*(paths[node] if node >= 0 else []), child])
                node = child
            ends.append(node)
        width = max((len(p) for p in paths), default=1)
        parents = torch.tensor(parent, dtype=torch.long)
        has_children = torch.zeros(len(tokens), dtype=torch.bool)
        has_children[parents[parents >= 0]] = True
        return cls(
            torch.tensor(tokens, dtype=torch.long),
            parents,
            torch.tensor([len(p) - 1 for p in paths], dtype=torch.long),
            ends,
            torch.tensor([p + [0] * (width - len(p)) for p in paths], dtype=torch.long).reshape(len(tokens), width),
            torch.tensor([[True] * len(p) + [False] * (width - len(p)) for p in paths]).reshape(len(tokens), width),
            has_children,
        )


def tree_supported(model: Any) -> str | None:
    """None when ``score_tree`` can run ``model``; otherwise why not (the caller uses ``score_candidates``)."""
    transformer = getattr(model, "transformer", None)
    config = getattr(model, "config", None)
    if transformer is None or config is None or not hasattr(transformer, "blocks"):
        return f"{type(model).__name__} is not an MPT model"
    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        return f"weights on {parameter.device.type} in {parameter.dtype} (the tree search runs float32 on CPU)"
    attn_config = dict(getattr(config, "attn_config", {}) or {})
    if attn_config.get("rope"):
        return "rotary position embeddings"
    if getattr(config, "block_overrides", None):
        return "block_overrides"
    if getattr(config, "final_logit_softcapping", None) is not None:
        return "final_logit_softcapping"
    if getattr(config, "embedding_fraction", 1.0) != 1.0:
        return "embedding_fraction"
    for block in transformer.blocks:
        attn = getattr(block, "attn", None)
        if getattr(block, "fuse_norm_attn_norm", False) or attn is None or not hasattr(attn, "get_qkv"):
            return "a block layout other than norm, attention, norm, FFN"
        if getattr(attn, "attn_logit_softcapping", None) is not None:
            return "attention logit softcapping"
        if getattr(attn, "sliding_window_size", -1) not in (-1, None):
            return "sliding-window attention"
        if getattr(attn, "reuse_kv_layer_idx", None) is not None or getattr(attn, "reuse_kv_x_layer_idx", None):
            return "key-value reuse across layers"
        if getattr(attn, "temperature_tuning", False):
            return "attention temperature tuning"
    return None


def score_tree(model: Any, prompt: Sequence[int], tree: CandidateTree) -> torch.Tensor:
    """Summed log-probability of every candidate of ``tree`` after ``prompt`` (``[candidates]``, float32).

    The model runs on each node with children once, shallowest first.
    """
    with torch.no_grad():
        state = _TreeState(model, prompt, tree)
        for level in range(int(tree.depth.max()) + 1):
            state.expand(((tree.depth == level) & tree.has_children).nonzero().squeeze(1))
    return state.totals[torch.tensor(tree.ends, dtype=torch.long)]


def top_k_tree(
    model: Any, prompt: Sequence[int], tree: CandidateTree, k: int, allowed: torch.Tensor | None = None
) -> list[tuple[int, float]]:
    """The ``k`` best candidates after ``prompt`` by summed log-probability, exactly, best first.

    A node's summed log-probability bounds every candidate below it (log-probabilities are never positive), so a
    branch whose node scores below the ``k``-th best finished candidate cannot hold a better one. The search
    first follows the ``k`` best nodes of each depth down to finished candidates (a beam search over the tree),
    which gives that threshold; then it runs, a depth at a time and all in one batch, every open node still at
    or above the threshold (which rises as candidates finish), until none is left. The result is what ranking
    ``score_tree``'s scores gives (ties aside); a model sure of its answer runs on few nodes, an unsure one on
    up to all.

    Args:
        allowed: Which candidates may be returned (``[candidates]`` booleans); None allows all.

    Returns:
        ``(candidate index, score)`` pairs; the first candidate listed for an end node stands for its copies.
    """
    wanted = torch.ones(len(tree.ends), dtype=torch.bool) if allowed is None else allowed
    first_of: dict[int, int] = {}  # end node -> its first allowed candidate
    for number, node in enumerate(tree.ends):
        if bool(wanted[number]):
            first_of.setdefault(node, number)
    end_nodes = torch.tensor(list(first_of), dtype=torch.long)
    need = min(k, len(end_nodes))
    # Nodes above some allowed candidate's end: the search never enters a branch of excluded items only.
    useful = torch.zeros(len(tree.tokens), dtype=torch.bool)
    useful[tree.path[end_nodes][tree.on_path[end_nodes]]] = True
    openable = useful & tree.has_children
    with torch.no_grad():
        state = _TreeState(model, prompt, tree)
        frontier = (tree.depth == 0) & openable
        beam = frontier.nonzero().squeeze(1)
        while need and len(beam):  # the beam: the k best open nodes of each depth
            beam = beam[state.totals[beam].argsort(descending=True)[:need]]
            frontier[beam] = False
            state.expand(beam)
            children = torch.isin(tree.parent, beam) & openable
            frontier |= children
            beam = children.nonzero().squeeze(1)
        while need:  # the sweep: every open node that can still beat the k-th best finished candidate
            threshold = float(state.totals[end_nodes].topk(need).values[-1])
            batch = (frontier & (state.totals >= threshold)).nonzero().squeeze(1)
            if not len(batch):
                break
            frontier[batch] = False
            state.expand(batch)
            frontier |= torch.isin(tree.parent, batch) & openable
        if not need:
            return []
        best = state.totals[end_nodes].topk(need)
    return [
        (first_of[int(end_nodes[i])], float(score))
        for i, score in zip(best.indices.tolist(), best.values.tolist(), strict=True)
        if score > -math.inf
    ]


class PromptState:
    """A prompt run once, and room for ``capacity`` tree nodes below it: what ``node_pass`` reads and writes.

    Attributes:
        offset: The prompt's length (the first node's position).
        keys, values: Each layer's prompt keys and values (``[heads, P, d]``).
        first: The next-token log-probabilities after the prompt (``[vocab]``).
        node_keys, node_values: Each layer's node keys and values (``[capacity, heads, d]``), filled as nodes run.
        prompt_bias, path_bias: ALiBi's terms for the prompt's keys and for path keys up to ``width`` deep.
    """

    def __init__(self, model: Any, prompt: Sequence[int], capacity: int, width: int) -> None:
        self.offset = len(prompt)
        self.keys, self.values, last = _prompt_pass(model, torch.tensor(list(prompt), dtype=torch.long))
        self.first = next_logprobs(model, last[None])[0]
        self.node_keys = [torch.zeros((capacity, k.shape[0], k.shape[2])) for k in self.keys]
        self.node_values = [torch.zeros_like(k) for k in self.node_keys]
        slopes = _slopes(model)
        self.prompt_bias = slopes[:, None] * torch.arange(self.offset).float() if slopes is not None else None
        self.path_bias = slopes[:, None] * (self.offset + torch.arange(width)).float() if slopes is not None else None


class _TreeState(PromptState):
    """One prompt's pass over a candidate tree: the run nodes' keys and values and the nodes' path sums."""

    def __init__(self, model: Any, prompt: Sequence[int], tree: CandidateTree) -> None:
        super().__init__(model, prompt, len(tree.tokens), tree.path.shape[1])
        self.model, self.tree = model, tree
        self.totals = torch.full((len(tree.tokens),), -math.inf)
        first = (tree.depth == 0).nonzero().squeeze(1)
        self.totals[first] = self.first[tree.tokens[first]]

    def expand(self, nodes: torch.Tensor) -> None:
        """Run the model on ``nodes`` (their ancestors already run) and score their children."""
        for start in range(0, len(nodes), ROWS_PER_CHUNK):
            self._expand(nodes[start : start + ROWS_PER_CHUNK])

    def _expand(self, nodes: torch.Tensor) -> None:
        tree = self.tree
        depth = int(tree.depth[nodes].max()) + 1
        hidden = node_pass(
            self.model,
            self,
            tree.tokens[nodes],
            self.offset + tree.depth[nodes],
            nodes,
            tree.path[nodes, :depth],
            tree.on_path[nodes, :depth],
        )
        logprobs = next_logprobs(self.model, hidden)
        children = torch.isin(tree.parent, nodes).nonzero().squeeze(1)
        row = torch.searchsorted(nodes.sort().values, tree.parent[children])
        order = nodes.argsort()
        self.totals[children] = self.totals[tree.parent[children]] + logprobs[order[row], tree.tokens[children]]


def node_pass(
    model: Any,
    state: PromptState,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    nodes: torch.Tensor,
    path: torch.Tensor,
    on_path: torch.Tensor,
) -> torch.Tensor:
    """Run the model on tree nodes whose ancestors have run: the last hidden state of each (``[n, d_model]``).

    The nodes' keys and values are written into ``state`` at ``nodes``. ``path[i]`` lists node ``i``'s ancestors
    and itself, shallowest first (``on_path`` marks the real entries).
    """
    offset = state.offset
    # ALiBi adds slope * (key position - query position); the query's part is the same for every key of a
    # row, which softmax ignores, so only the keys' positions enter: the prompt's 0..P-1, a path's P + depth.
    blocked = torch.where(on_path, 0.0, torch.finfo(torch.float32).min)[:, None, :]  # [n, 1, a]
    path_bias = blocked + (state.path_bias[None, :, : path.shape[1]] if state.path_bias is not None else 0.0)
    hidden = _embed(model, tokens, positions)
    for layer, block in enumerate(model.transformer.blocks):
        query, key, value = _split(block.attn, block.norm_1(hidden))
        state.node_keys[layer][nodes], state.node_values[layer][nodes] = key, value
        query = query * _scale(block.attn, query.shape[-1])
        path_keys, path_values = state.node_keys[layer][path], state.node_values[layer][path]  # [n, a, h, d]
        to_prompt = torch.matmul(query.transpose(0, 1), state.keys[layer].transpose(1, 2)).transpose(0, 1)
        if state.prompt_bias is not None:
            to_prompt = to_prompt + state.prompt_bias
        to_path = torch.einsum("nhd,nahd->nha", query, path_keys) + path_bias
        weights = torch.cat([to_prompt, to_path], dim=-1).softmax(-1)
        context = torch.matmul(weights[..., :offset].transpose(0, 1), state.values[layer]).transpose(0, 1)
        context = context + torch.einsum("nha,nahd->nhd", weights[..., offset:], path_values)
        hidden = _block_tail(block, hidden, context.reshape(len(tokens), -1))
    return hidden


def _slopes(model: Any) -> torch.Tensor | None:
    attn_config = dict(model.config.attn_config)
    if not attn_config.get("alibi"):
        return None
    heads = model.config.n_heads
    count = 2 ** math.ceil(math.log2(heads))  # llm-foundry's gen_slopes, as MPT builds its ALiBi bias
    slopes = 1.0 / torch.pow(
        2, torch.arange(1, count + 1, dtype=torch.float32) * (attn_config["alibi_bias_max"] / count)
    )
    if count != heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:heads]
    return slopes


def _embed(model: Any, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    transformer = model.transformer
    hidden = transformer.wte(tokens)
    if getattr(transformer, "learned_pos_emb", False):
        hidden = hidden + transformer.wpe(positions)
    return hidden


def next_logprobs(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Next-token log-probabilities (``[n, vocab]``, float32) from last hidden states (``[n, d_model]``)."""
    return torch.log_softmax(_logits(model, hidden), dim=-1)


def _logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    hidden = model.transformer.norm_f(hidden)
    lm_head = getattr(model, "lm_head", None)
    logits = lm_head(hidden) if lm_head is not None else model.transformer.wte(hidden, True)
    if getattr(model, "logit_scale", None) is not None:
        logits = logits * model.logit_scale
    return logits.float()


def _split(attn: Any, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries ``[rows, heads, d]`` and keys, values ``[rows, heads, d]`` (grouped heads repeated) of a layer."""
    query, key, value = attn.get_qkv(hidden[None])
    heads, kv_heads = attn.n_heads, attn.kv_n_heads
    size = query.shape[-1] // heads
    query = query[0].view(-1, heads, size)
    key, value = key[0].view(-1, kv_heads, size), value[0].view(-1, kv_heads, size)
    if kv_heads != heads:
        key, value = key.repeat_interleave(heads // kv_heads, 1), value.repeat_interleave(heads // kv_heads, 1)
    return query, key, value


def _scale(attn: Any, size: int) -> float:
    return attn.softmax_scale if attn.softmax_scale is not None else 1 / math.sqrt(size)


def _prompt_pass(model: Any, tokens: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Causal forward over the prompt: each layer's keys and values ``[heads, P, d]`` and the last hidden state."""
    length = len(tokens)
    positions = torch.arange(length)
    hidden = _embed(model, tokens, positions)
    slopes = _slopes(model)
    causal = torch.ones((length, length), dtype=torch.bool).tril()
    keys, values = [], []
    for block in model.transformer.blocks:
        query, key, value = _split(block.attn, block.norm_1(hidden))
        query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        weights = query @ key.transpose(1, 2) * _scale(block.attn, query.shape[-1])
        if slopes is not None:
            weights = weights + slopes[:, None, None] * (positions - positions[:, None]).float()
        weights = weights.masked_fill(~causal, torch.finfo(weights.dtype).min).softmax(-1)
        context = (weights @ value).transpose(0, 1).reshape(length, -1)
        hidden = _block_tail(block, hidden, context)
        keys.append(key)
        values.append(value)
    return keys, values, hidden[-1]


def _block_tail(block: Any, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    hidden = hidden + block.attn.out_proj(context)
    mlp_in = block.norm_2(hidden) if getattr(block, "norm_2", None) is not None else hidden
    return hidden + block.ffn(mlp_in)
