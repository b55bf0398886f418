"""How one forward pass runs: the input checks, the attention mask as a key mask, and the packed execution
that computes real tokens only. Kept out of bert/modeling.py, whose blocks only read the plan.

Notation: B batch, T sequence length, N tokens computed (packed), H hidden size.

Packing needs data-dependent sizes (how many tokens are real), which the host must know. So it is computed
where a batch is made, on the CPU (``Packing.from_mask``, called by the collate functions), and handed to the
model with the batch: on a GPU, forward then never waits for the device. Given no Packing, forward packs
CPU tensors itself (free there) and runs GPU tensors padded.

    input_ids [[CLS] a b [SEP] PAD PAD]      keep  [1 1 1 1 0 0]
              [[CLS] c [SEP] PAD PAD PAD]            [1 1 1 0 0 0]
    positions (flat, row-major): 0 1 2 3 6 7 8       first: [0, 4]   (row of each sequence's [CLS] in N)
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor

IGNORED_LABELS = (-1, -100)  # label values no loss counts: the original's convention and HF's


def tracing() -> bool:
    """Whether a trace or a compiled graph is being built (no value checks, no data-dependent shapes)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def check_inputs(config, input_ids: Tensor, token_type_ids: Optional[Tensor]) -> None:
    """Reject inputs that would otherwise fail deep inside an embedding lookup.

    Values are checked on the CPU only: on another device the check would make the host wait for it.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, seq_len], got shape {tuple(input_ids.shape)}")
    if tracing():
        return  # value checks would be frozen into the trace or break the compiled graph
    if input_ids.shape[1] > config.max_position_embeddings:
        raise ValueError(f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings "
                         f"({config.max_position_embeddings}): truncate the input")
    if input_ids.device.type != "cpu":
        return
    for ids, size, what in ((input_ids, config.vocab_size, "input_ids contains id {}, outside the vocabulary"),
                            (token_type_ids, config.type_vocab_size, "token_type_ids contains {}, outside")):
        if ids is not None and ids.numel():
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= size:
                suffix = " (type_vocab_size)" if ids is token_type_ids else ""
                raise ValueError(what.format(low if low < 0 else high) + f" [0, {size}){suffix}")


def attended(attention_mask: Tensor) -> Tensor:
    """[..., T] mask -> bool [..., T]: the keys each row attends to. A row whose mask is all zeros attends to
    every position, as the original's additive -10000 mask makes it do (it shifts every score alike)."""
    keep = attention_mask != 0
    return keep | ~keep.any(dim=-1, keepdim=True)


class Packing(NamedTuple):
    """Where a padded batch's real tokens are, and (for a masked-LM loss) which positions are labelled."""

    positions: Tensor  # [N] flat positions (row-major in [B, T]) of the tokens computed
    first: Tensor  # [B] row in [N] of each sequence's first token ([CLS])
    labelled: Optional[Tensor] = None  # [M] flat positions in [B, T] whose masked-LM label counts

    @classmethod
    def from_mask(cls, attention_mask: Tensor, masked_lm_labels: Optional[Tensor] = None) -> Optional["Packing"]:
        """The packing of a batch from its mask ([B, T], or [B, C, T] for multiple choice: rows flattened).

        Returns None when there is nothing to skip (no padding, no labels to pick). Reads the mask's values:
        call it on the CPU, where the batch is made.
        """
        keep = attended(attention_mask.reshape(-1, attention_mask.shape[-1]))  # [B, T]
        labelled = None
        if masked_lm_labels is not None:
            flat = masked_lm_labels.reshape(-1)
            labelled = ((flat != IGNORED_LABELS[0]) & (flat != IGNORED_LABELS[1])).nonzero().squeeze(1)
        if bool(keep.all()):
            if labelled is None:
                return None
            positions = torch.arange(keep.numel())
            return cls(positions, torch.arange(0, keep.numel(), keep.shape[1]), labelled)
        keep = keep.clone()
        keep[:, 0] = True  # the pooler reads position 0 even where it is padding
        counts = keep.sum(dim=1)  # [B]: rows before each sequence in the packed tensor locate its first token
        return cls(keep.view(-1).nonzero().squeeze(1), counts.cumsum(0) - counts, labelled)

    def to(self, device: torch.device, non_blocking: bool = True) -> "Packing":
        return Packing(*(None if t is None else t.to(device, non_blocking=non_blocking) for t in self))


class EncoderPlan(NamedTuple):
    """How the encoder runs on a batch; every block reads it where the original reads the extended mask.

    With `packed`, dense layers (projections, feed-forward, LayerNorm) run on the real tokens only, as a
    [N, H] tensor: only attention needs the padded shape, and gets it through pad() / unpad().
    """

    # Which keys each query may attend to: bool [B, 1, 1, T] (True: attend), or the original's additive
    # float mask (0 or -10000) when a block is called with one; None: every key.
    key_mask: Optional[Tensor]
    packed: Optional[Tensor] = None  # [N] flat positions (row-major) of the computed tokens; None: all
    first: Optional[Tensor] = None  # [B] row in [N] of each sequence's first token ([CLS])
    shape: tuple[int, int] = (0, 0)  # (B, T)
    attentions: Optional[list] = None  # when a list: each layer appends its [B, heads, T, T] probabilities
    first_only: bool = False  # queries from each sequence's first token only (the last layer of pooled())

    def pad(self, x: Tensor) -> Tensor:
        """Packed [N, d] -> [B, T, d] with zeros at positions not computed (as is if padded)."""
        if self.packed is None:
            return x
        flat = x.new_zeros(self.shape[0] * self.shape[1], x.shape[-1]).index_copy_(0, self.packed, x)  # no clone
        return flat.view(*self.shape, -1)

    def unpad(self, x: Tensor) -> Tensor:
        """[B, T, d] -> packed [N, d] (as is if padded)."""
        return x if self.packed is None else x.flatten(0, 1).index_select(0, self.packed)

    def first_tokens(self, x: Tensor) -> Tensor:
        """The first token of every sequence as [B, 1, d], from padded or packed hidden states."""
        return x[:, :1] if self.packed is None else x.index_select(0, self.first).unsqueeze(1)


def as_plan(attention_mask: Union[Tensor, EncoderPlan, None]) -> EncoderPlan:
    """A block's mask argument as a plan: ours as it is, or the original's extended additive mask
    ([B, 1, 1, T], 0 where attended and -10000 elsewhere), which is added to the scores."""
    return attention_mask if isinstance(attention_mask, EncoderPlan) else EncoderPlan(attention_mask)


def make_plan(input_ids: Tensor, attention_mask: Optional[Tensor], packing: Optional[Packing], skip_padding: bool,
              output_attentions: bool, first_only: bool = False) -> EncoderPlan:
    """The plan of one forward pass of BertModel.

    Args:
        input_ids: [B, T].
        attention_mask: [B, T] 1/0, or None (every token real).
        packing: from the data loader; None: computed here on the CPU, none on another device.
        skip_padding: compute real tokens only (packing used or made).
        output_attentions: collect each layer's probabilities (the padded, explicit path).
        first_only: the last layer computes each sequence's first token only (BertModel.pooled).
    """
    keep = None if attention_mask is None else attended(attention_mask)  # [B, T]
    plan = EncoderPlan(None if keep is None else keep[:, None, None, :], shape=tuple(input_ids.shape),
                       attentions=[] if output_attentions else None, first_only=first_only)
    if keep is None or not skip_padding or output_attentions or tracing():
        return plan  # packing has data-dependent shapes: a trace or a compiled graph keeps the padded computation
    if packing is None and attention_mask.device.type == "cpu":
        packing = Packing.from_mask(attention_mask)
    if packing is None or packing.positions.numel() == input_ids.numel():
        return plan  # no packing, or one that computes every token (it only lists masked-LM labels)
    return plan._replace(packed=packing.positions, first=packing.first)
