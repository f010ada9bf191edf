"""trl's async GRPO packs each micro-batch into a prefix tree (the G completions of a prompt share its tokens)
and runs attention through a flash-attention-3 kernel it downloads from the Hugging Face hub at run time:
CUDA only, and unreachable from clusters without hub access. This is the same attention in plain PyTorch
(`scaled_dot_product_attention` with the tree's mask), registered under trl's name; it runs anywhere.

Each segment of the tree attends to the key/value rows on its root-to-segment path (`tree_kv_index`), causally:
the segment's own tokens are the last ones of its path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def tree_mask(
    n: int,
    kv_index: torch.Tensor,
    cu_q: torch.Tensor,
    cu_k: torch.Tensor,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Boolean [n, n] mask over packed positions: row = query token, column = key token it may attend."""
    mask = torch.zeros(n, n, dtype=torch.bool, device=kv_index.device)
    cu_q, cu_k = cu_q.tolist(), cu_k.tolist()
    for s in range(len(cu_q) - 1):
        q0, q1, k0, k1 = cu_q[s], cu_q[s + 1], cu_k[s], cu_k[s + 1]
        path = kv_index[k0:k1]
        n_q, n_k = q1 - q0, k1 - k0
        q_pos = torch.arange(n_k - n_q, n_k, device=kv_index.device)  # depth of each query on the path
        k_pos = torch.arange(n_k, device=kv_index.device)
        allowed = k_pos[None, :] <= q_pos[:, None]
        if sliding_window:
            allowed &= q_pos[:, None] - k_pos[None, :] < sliding_window
        mask[q0:q1].index_copy_(1, path, allowed)  # `path` holds distinct positions
    return mask


def tree_sdpa(
    module,
    query,
    key,
    value,
    attention_mask,
    *,
    tree_kv_index,
    tree_cu_seqlens_q,
    tree_cu_seqlens_k,
    tree_max_seqlen_q=None,
    tree_max_seqlen_k=None,
    scaling=None,
    sliding_window=None,
    softcap=None,
    dropout=0.0,
    **kwargs,
):
    """Drop-in for trl's `tree_attention` (query/key/value [1, heads, n, head_dim]; returns [1, n, heads, dim])."""
    if softcap:
        raise NotImplementedError("attention logit softcapping is not supported by the tree attention fallback")
    n = query.shape[2]
    mask = tree_mask(n, tree_kv_index, tree_cu_seqlens_q, tree_cu_seqlens_k, sliding_window)
    if key.shape[1] != query.shape[1]:  # grouped-query attention
        rep = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
    out = F.scaled_dot_product_attention(
        query, key.to(query.dtype), value.to(query.dtype), attn_mask=mask, scale=scaling
    )
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register the fallback under trl's tree-attention name (after trl registered its own); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface
    from trl.experimental.async_grpo.packing import TREE_ATTENTION

    AttentionInterface.register(TREE_ATTENTION, tree_sdpa)
    AttentionMaskInterface.register(TREE_ATTENTION, lambda **kwargs: None)
    return TREE_ATTENTION
