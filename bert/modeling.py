"""BERT in PyTorch, op for op with Google's TensorFlow model, readable top to bottom.

Module and parameter names follow the TF checkpoint (``LayerNorm``, ``query``, ``dense``, ...) so that
conversion is a plain name map and saved weights load in other BERT implementations.

    input_ids ─► BertEmbeddings ─► BertLayer x N ─► encoded_layers ─► BertPooler ─► pooled_output
                (word+pos+type,    (self-attention, feed-forward,        (tanh(dense([CLS])))
                 LayerNorm)         each followed by residual+LayerNorm)
"""

from __future__ import annotations

import logging
import math
from typing import Callable, NamedTuple, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bert.model.config import BertConfig
from bert.file_utils import CONFIG_NAME, WEIGHTS_NAME, cached_path  # noqa: F401 (the original's names here)
from bert.io.releases import archive_map
from bert.formats.tf_checkpoint import load_tf_weights_in_bert  # noqa: F401
from bert.model.weights import BERT_CONFIG_NAME, TF_WEIGHTS_NAME, PreTrainedBertMixin  # noqa: F401


logger = logging.getLogger(__name__)

# Every shortcut name -> the archive bert.io.hub downloads for it (pytorch-pretrained-bert's name; its S3
# addresses are gone, so these are Google's release archives, which from_pretrained converts once).
PRETRAINED_MODEL_ARCHIVE_MAP = archive_map()


def gelu(x: Tensor) -> Tensor:
    """The exact GELU, x * Phi(x) with the erf form (HF, pytorch-pretrained-bert)."""
    return F.gelu(x)


def gelu_tanh(x: Tensor) -> Tensor:
    """The tanh approximation of GELU that Google's TF BERT used from February 2019 on."""
    return F.gelu(x, approximate="tanh")


def swish(x: Tensor) -> Tensor:
    """x * sigmoid(x) (SiLU)."""
    return F.silu(x)


ACT2FN = {"gelu": gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh,
          "relu": F.relu, "silu": swish, "swish": swish}


def activation(hidden_act) -> Callable[[Tensor], Tensor]:
    """The function for a config's hidden_act: a name in ACT2FN, or the function itself (as the original)."""
    return ACT2FN[hidden_act] if isinstance(hidden_act, str) else hidden_act


class BertLayerNorm(nn.LayerNorm):
    """LayerNorm over the last dimension with BERT's epsilon, 1e-12, by default (the original's name; its
    parameters are ``weight`` and ``bias``, which old checkpoints call ``gamma`` and ``beta``)."""

    def __init__(self, hidden_size: int, eps: float = 1e-12):
        super().__init__(hidden_size, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)


class BertModelOutput(NamedTuple):
    """What BertModel returns: all layers (or the last one) and the pooled [CLS] vector."""

    encoded_layers: list[Tensor] | Tensor
    pooled_output: Tensor


class BertModelOutputWithAttentions(NamedTuple):
    encoded_layers: list[Tensor] | Tensor
    pooled_output: Tensor
    attentions: list[Tensor]  # one [batch, heads, seq, seq] tensor per layer


class QuestionAnsweringLogits(NamedTuple):
    start_logits: Tensor
    end_logits: Tensor


class PreTrainingLogits(NamedTuple):
    prediction_scores: Tensor
    seq_relationship_score: Tensor


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def check_inputs(config: BertConfig, input_ids: Tensor, token_type_ids: Optional[Tensor]) -> None:
    """Reject inputs that would otherwise fail deep inside an embedding lookup."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, seq_len], got shape {tuple(input_ids.shape)}")
    if _tracing():
        return  # value checks would be frozen into the trace or break the compiled graph
    if input_ids.shape[1] > config.max_position_embeddings:
        raise ValueError(f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings "
                         f"({config.max_position_embeddings}): truncate the input")
    for ids, size, what in ((input_ids, config.vocab_size, "input_ids contains id {}, outside the vocabulary"),
                            (token_type_ids, config.type_vocab_size, "token_type_ids contains {}, outside")):
        if ids is not None and ids.numel():
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= size:
                suffix = " (type_vocab_size)" if ids is token_type_ids else ""
                raise ValueError(what.format(low if low < 0 else high) + f" [0, {size}){suffix}")


def dropout_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> Tensor:
    """A CPU dropout mask, 0 (probability round(p * 65536) / 65536) or 1 / (1 - p), 5-10x faster than torch's
    bernoulli_: 16-bit integers from numpy's PCG64, seeded from torch's generator (manual_seed decides)."""
    n, rng = math.prod(shape), np.random.PCG64(int(torch.randint(2**62, ())))
    bits = torch.from_numpy(rng.random_raw(-(-n // 4)).view(np.int16)[:n])  # 4 x 16 bits per 64-bit draw
    keep = torch.empty(shape, dtype=dtype)
    torch.ge(bits.view(shape), round(p * 65536) - 32768, out=keep)
    return keep.mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """nn.Dropout, with dropout_mask's faster mask in eager CPU training."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or _tracing():
            return super().forward(x)
        return x * dropout_mask(x.shape, self.p, x.dtype)


class EncoderPlan(NamedTuple):
    """How the encoder runs on a batch; BertModel._plan builds it once per call and every block reads it
    where the original reads the extended attention mask.

    With `packed`, dense layers (projections, feed-forward, LayerNorm) run on the real tokens only, as a
    [tokens, hidden] tensor: only attention needs the padded shape, and gets it through pad() / unpad().
    """

    # Which keys each query may attend to: bool [batch, 1, 1, seq] (True: attend), or the original's
    # additive float mask (0 or -10000) when a block is called with one; None: every key.
    key_mask: Optional[Tensor]
    packed: Optional[Tensor] = None  # [tokens] flat positions (row-major) of the computed tokens; None: all
    first: Optional[Tensor] = None  # [batch] row in [tokens] of each sequence's first token ([CLS])
    shape: tuple[int, int] = (0, 0)  # (batch, seq)
    attentions: Optional[list] = None  # when a list: each layer appends its [batch, heads, seq, seq] probs
    first_only: bool = False  # queries from each sequence's first token only (the last layer of pooled())

    def pad(self, x: Tensor) -> Tensor:
        """Packed [tokens, d] -> [batch, seq, d] with zeros at positions not computed (as is if padded)."""
        if self.packed is None:
            return x
        flat = x.new_zeros(self.shape[0] * self.shape[1], x.shape[-1]).index_copy_(0, self.packed, x)  # no clone
        return flat.view(*self.shape, -1)

    def unpad(self, x: Tensor) -> Tensor:
        """[batch, seq, d] -> packed [tokens, d] (as is if padded)."""
        return x if self.packed is None else x.flatten(0, 1).index_select(0, self.packed)

    def first_tokens(self, x: Tensor) -> Tensor:
        """The first token of every sequence as [batch, 1, d], from padded or packed hidden states."""
        return x[:, :1] if self.packed is None else x.index_select(0, self.first).unsqueeze(1)


def as_plan(attention_mask: Union[Tensor, EncoderPlan, None]) -> EncoderPlan:
    """A block's mask argument as a plan: ours as it is, or the original's extended additive mask
    ([batch, 1, 1, seq], 0 where attended and -10000 elsewhere), which is added to the scores."""
    return attention_mask if isinstance(attention_mask, EncoderPlan) else EncoderPlan(attention_mask)


class BertEmbeddings(nn.Module):
    """Word + position + token type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        # padding_idx=0: the [PAD] row gets no gradient, as in pytorch-pretrained-bert and HF.
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = BertLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
                plan: Optional[EncoderPlan] = None) -> Tensor:
        """[batch, seq] ids -> [batch, seq, hidden], or [tokens, hidden] when the plan packs them."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if plan is None or plan.packed is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)
        else:
            position_ids = plan.packed % input_ids.shape[1]
            input_ids = input_ids.reshape(-1).index_select(0, plan.packed)
            token_type_ids = token_type_ids.reshape(-1).index_select(0, plan.packed)
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        config.check_model_shape()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.head_size
        self.all_head_size = config.hidden_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_prob = config.attention_probs_dropout_prob
        self.dropout = Dropout(config.attention_probs_dropout_prob)

    def transpose_for_scores(self, x: Tensor) -> Tensor:
        """[batch, seq, hidden] -> [batch, heads, seq, head_size]."""
        return self._heads(x, 1)[0]

    def _heads(self, x: Tensor, parts: int) -> tuple[Tensor, ...]:
        # [batch, seq, parts * hidden] -> parts x [batch, heads, seq, head_size]
        x = x.view(x.shape[0], x.shape[1], parts, self.num_attention_heads, self.attention_head_size)
        return x.permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, hidden_states: Tensor, attention_mask: Union[Tensor, EncoderPlan, None]) -> Tensor:
        """hidden_states: [batch, seq, hidden], or [tokens, hidden] when the plan packs them.
        Returns the context shaped as hidden_states ([batch, 1, hidden] if the plan's first_only).
        """
        plan = as_plan(attention_mask)
        # One matmul for the three projections: the parameters stay query/key/value (checkpoint names).
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        hidden = self.query.weight.shape[0]
        if plan.first_only:
            k, v = self._heads(plan.pad(F.linear(hidden_states, weight[hidden:], bias[hidden:])), 2)
            (q,) = self._heads(F.linear(plan.first_tokens(hidden_states), weight[:hidden], bias[:hidden]), 1)
        else:
            q, k, v = self._heads(plan.pad(F.linear(hidden_states, weight, bias)), 3)
        key_mask, dropout = plan.key_mask, self.dropout_prob if self.training else 0.0
        if plan.attentions is not None or (dropout > 0 and q.device.type == "cpu"):
            # The explicit path when the probabilities are wanted, or dropped out on the CPU (where
            # SDPA's dropout takes its slow math path).
            scores = (q / math.sqrt(self.attention_head_size)) @ k.transpose(-1, -2)  # [batch, heads, seq, seq]
            if key_mask is not None and key_mask.dtype == torch.bool:
                scores.masked_fill_(~key_mask, torch.finfo(scores.dtype).min)
            elif key_mask is not None:
                scores = scores + key_mask
            probs = scores.softmax(dim=-1)
            context = self.dropout(probs) @ v
            if plan.attentions is not None:
                plan.attentions.append(probs)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout)
        context = context.transpose(1, 2).flatten(2)  # [batch, heads, seq, head_size] -> [batch, seq, hidden]
        return context if plan.first_only else plan.unpad(context)


class BertSelfOutput(nn.Module):
    """Projection back to hidden_size, dropout, residual, LayerNorm: closes the attention block (and,
    as BertOutput, the feed-forward block)."""

    def __init__(self, config: BertConfig, in_features: Optional[int] = None):
        super().__init__()
        self.dense = nn.Linear(in_features or config.hidden_size, config.hidden_size)
        self.LayerNorm = BertLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, input_tensor: Tensor, attention_mask: Union[Tensor, EncoderPlan, None]) -> Tensor:
        plan = as_plan(attention_mask)
        context = self.self(input_tensor, plan)
        residual = plan.first_tokens(input_tensor) if plan.first_only else input_tensor
        return self.output(context, residual)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = activation(config.hidden_act)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class BertOutput(BertSelfOutput):
    def __init__(self, config: BertConfig):
        super().__init__(config, config.intermediate_size)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden_states: Tensor, attention_mask: Union[Tensor, EncoderPlan, None]) -> Tensor:
        attention_output = self.attention(hidden_states, attention_mask)
        return self.output(self.intermediate(attention_output), attention_output)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden_states: Tensor, attention_mask: Union[Tensor, EncoderPlan, None],
                output_all_encoded_layers: bool = True) -> list[Tensor]:
        """Every layer's output (or the last one's, in a list); with the plan's first_only, the last
        layer's is the first tokens' only."""
        plan = as_plan(attention_mask)
        all_encoder_layers = []
        for i, layer in enumerate(self.layer):
            last = i == len(self.layer) - 1
            hidden_states = layer(hidden_states, plan if last else plan._replace(first_only=False))
            if output_all_encoded_layers or last:
                all_encoder_layers.append(hidden_states)
        return all_encoder_layers


class BertPooler(nn.Module):
    """tanh(dense(hidden state of the first token, [CLS]))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class BertPreTrainedModel(PreTrainedBertMixin, nn.Module):
    """Base of every model: holds the config, initialises weights as the original, loads and saves."""

    def __init__(self, config: BertConfig, *inputs, **kwargs):
        super().__init__()
        if not isinstance(config, BertConfig):
            raise ValueError(
                f"Parameter config in `{type(self).__name__}(config)` should be an instance of class `BertConfig`"
                f", got {type(config).__name__}. To create a model from a pretrained model use "
                f"`model = {type(self).__name__}.from_pretrained(PRETRAINED_MODEL_NAME)`")
        self.config = config

    def init_bert_weights(self, module: nn.Module) -> None:
        """normal(0, initializer_range) for weights, LayerNorm 1 and 0, biases 0 (as the original)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()


class BertModel(BertPreTrainedModel):
    """The BERT encoder: embeddings, N transformer layers and the pooler.

    Returns ``(encoded_layers, pooled_output)``: a list with every layer's [batch, seq, hidden] output
    when output_all_encoded_layers (the default, as pytorch-pretrained-bert), else the last layer only;
    with output_attentions, a third field holds each layer's attention probabilities.

    A row whose attention mask is all zeros attends to every position, as the original's additive mask
    makes it do (its -10000 shifts every score of the row alike).
    """

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None, output_all_encoded_layers: bool = True,
                output_attentions: bool = False, skip_padding: bool = False):
        """Encode a batch of [batch, seq] ids (token types default to 0, the mask to 1).

        skip_padding computes real tokens only (and each sequence's first): faster, with zeros at padded
        positions instead of the padded computation's values there. No real token attends to padding,
        so their outputs and the pooled output do not change.
        """
        token_type_ids, plan = self._plan(input_ids, token_type_ids, attention_mask,
                                          skip_padding and not output_attentions, output_attentions)
        layers = self.encoder(self.embeddings(input_ids, token_type_ids, plan), plan, output_all_encoded_layers)
        pooled_output = self.pooler(plan.first_tokens(layers[-1]))
        layers = [plan.pad(h) for h in layers]
        encoded = layers if output_all_encoded_layers else layers[-1]
        if output_attentions:
            return BertModelOutputWithAttentions(encoded, pooled_output, plan.attentions)
        return BertModelOutput(encoded, pooled_output)

    def pooled(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
               attention_mask: Optional[Tensor] = None) -> Tensor:
        """Only the pooled output [batch, hidden], with the least work: real tokens only, and in the last
        layer only each sequence's first token (the one the pooler reads). Same values as forward's."""
        token_type_ids, plan = self._plan(input_ids, token_type_ids, attention_mask, True, False, True)
        layers = self.encoder(self.embeddings(input_ids, token_type_ids, plan), plan, False)
        return self.pooler(layers[-1])

    def _plan(self, input_ids, token_type_ids, attention_mask, skip_padding: bool, output_attentions: bool,
              first_only: bool = False) -> tuple[Tensor, EncoderPlan]:
        """Check the inputs; return token_type_ids (zeros by default) and the plan of the encoder."""
        check_inputs(self.config, input_ids, token_type_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        keep = None if attention_mask is None else attention_mask != 0  # [batch, seq]
        if keep is not None:
            keep = keep | ~keep.any(dim=1, keepdim=True)  # an all-zero row attends everywhere (see class doc)
        # [batch, seq] -> bool [batch, 1, 1, seq]: which keys each query may attend to.
        plan = EncoderPlan(None if keep is None else keep[:, None, None, :], shape=tuple(input_ids.shape),
                           attentions=[] if output_attentions else None, first_only=first_only)
        # Packing has data-dependent shapes: a trace or a compiled graph keeps the padded computation.
        if keep is None or not skip_padding or _tracing() or bool(keep.all()):
            return token_type_ids, plan
        keep = keep.clone()
        keep[:, 0] = True  # the pooler reads position 0 even where it is padding
        counts = keep.sum(dim=1)  # rows before each sequence in the packed tensor: where its first token is
        plan = plan._replace(packed=keep.view(-1).nonzero().squeeze(1), first=counts.cumsum(0) - counts)
        return token_type_ids, plan


# ----------------------------------------------------------------------------------------------
# Heads. Each one: self.bert = BertModel(config), dropout where the original has it, a linear layer.
# With labels a head returns its loss; without, its logits.


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = activation(config.hidden_act)
        self.LayerNorm = BertLayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class BertLMPredictionHead(nn.Module):
    """Masked-LM scores; the decoder weight is the word embedding matrix (tied), the bias its own."""

    def __init__(self, config: BertConfig, bert_model_embedding_weights: nn.Parameter):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        vocab_size, hidden_size = bert_model_embedding_weights.shape
        self.decoder = nn.Linear(hidden_size, vocab_size, bias=False)
        self.decoder.weight = bert_model_embedding_weights
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.decoder(self.transform(hidden_states)) + self.bias


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig, bert_model_embedding_weights: nn.Parameter):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, bert_model_embedding_weights)

    def forward(self, sequence_output: Tensor) -> Tensor:
        return self.predictions(sequence_output)


class BertOnlyNSPHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled_output: Tensor) -> Tensor:
        return self.seq_relationship(pooled_output)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig, bert_model_embedding_weights: nn.Parameter):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, bert_model_embedding_weights)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, sequence_output: Tensor, pooled_output: Tensor):
        return self.predictions(sequence_output), self.seq_relationship(pooled_output)


def _cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy ignoring label -1 (the original's convention) and -100 (HF's)."""
    labels = labels.masked_fill(labels == -100, -1)
    return F.cross_entropy(logits.float(), labels, ignore_index=-1)


def _masked_lm_loss(predictions: nn.Module, sequence_output: Tensor, labels: Tensor) -> Tensor:
    """The masked-LM loss; the vocabulary projection runs on the labelled positions only."""
    labels = labels.reshape(-1)
    if _tracing():  # no data-dependent shapes in a trace
        return _cross_entropy(predictions(sequence_output).flatten(0, -2), labels)
    picked = ((labels != -1) & (labels != -100)).nonzero().squeeze(1)
    hidden = sequence_output.flatten(0, -2).index_select(0, picked)
    return F.cross_entropy(predictions(hidden).float(), labels.index_select(0, picked))


def _skip_padding(attention_mask: Optional[Tensor], labels: Optional[Tensor]) -> bool:
    """Whether a loss may skip padding: no label (other than -1/-100) sits on a padded position."""
    if attention_mask is None or labels is None or _tracing():
        return not _tracing()
    return not bool(((labels != -1) & (labels != -100) & (attention_mask == 0)).any())


class BertForPreTraining(BertPreTrainedModel):
    """Masked LM + next sentence prediction.

    With both labels: the sum of the two losses. Otherwise (none, or only one of them, as the original):
    the logits, (prediction_scores [batch, seq, vocab], seq_relationship_score [batch, 2]).
    """

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings.weight)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                masked_lm_labels=None, next_sentence_label=None):
        if masked_lm_labels is None or next_sentence_label is None:
            sequence_output, pooled_output = self.bert(input_ids, token_type_ids, attention_mask, False)
            return PreTrainingLogits(*self.cls(sequence_output, pooled_output))
        sequence_output, pooled_output = self.bert(input_ids, token_type_ids, attention_mask, False,
                                                   skip_padding=_skip_padding(attention_mask, masked_lm_labels))
        masked_lm_loss = _masked_lm_loss(self.cls.predictions, sequence_output, masked_lm_labels)
        seq_relationship_score = self.cls.seq_relationship(pooled_output)
        return masked_lm_loss + _cross_entropy(seq_relationship_score.view(-1, 2), next_sentence_label.view(-1))


class BertForMaskedLM(BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertOnlyMLMHead(config, self.bert.embeddings.word_embeddings.weight)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, masked_lm_labels=None):
        # Logits alone keep the padded computation's values everywhere; the loss may skip padding.
        skip = masked_lm_labels is not None and _skip_padding(attention_mask, masked_lm_labels)
        sequence_output, _ = self.bert(input_ids, token_type_ids, attention_mask, False, skip_padding=skip)
        if masked_lm_labels is None:
            return self.cls(sequence_output)
        return _masked_lm_loss(self.cls.predictions, sequence_output, masked_lm_labels)


class BertForNextSentencePrediction(BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertOnlyNSPHead(config)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, next_sentence_label=None):
        pooled_output = self.bert.pooled(input_ids, token_type_ids, attention_mask)
        seq_relationship_score = self.cls(pooled_output)
        if next_sentence_label is None:
            return seq_relationship_score
        return _cross_entropy(seq_relationship_score.view(-1, 2), next_sentence_label.view(-1))


class BertForSequenceClassification(BertPreTrainedModel):
    """A linear classifier on the pooled output; num_labels=1 is regression with MSE (STS-B)."""

    def __init__(self, config: BertConfig, num_labels: int = 2):
        super().__init__(config)
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.num_labels = num_labels
        self.bert = BertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None):
        pooled_output = self.bert.pooled(input_ids, token_type_ids, attention_mask)
        logits = self.classifier(self.dropout(pooled_output))
        if labels is None:
            return logits
        if self.num_labels == 1:
            return F.mse_loss(logits.view(-1).float(), labels.view(-1).float())
        return _cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))


class BertForMultipleChoice(BertPreTrainedModel):
    """Inputs [batch, num_choices, seq]; one score per choice from the pooled output."""

    def __init__(self, config: BertConfig, num_choices: int = 4):
        super().__init__(config)
        self.num_choices = num_choices
        self.bert = BertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None):
        if input_ids.dim() != 3:
            raise ValueError(f"input_ids must be [batch, num_choices, seq], got {tuple(input_ids.shape)}")
        num_choices = input_ids.shape[1]
        flat = lambda t: None if t is None else t.reshape(-1, t.shape[-1])  # noqa: E731
        pooled_output = self.bert.pooled(flat(input_ids), flat(token_type_ids), flat(attention_mask))
        reshaped_logits = self.classifier(self.dropout(pooled_output)).view(-1, num_choices)
        if labels is None:
            return reshaped_logits
        return _cross_entropy(reshaped_logits, labels.view(-1))


class BertForTokenClassification(BertPreTrainedModel):
    """A label per token; the loss covers tokens with attention_mask 1 and a label other than -1/-100."""

    def __init__(self, config: BertConfig, num_labels: int = 2):
        super().__init__(config)
        self.num_labels = num_labels
        self.bert = BertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None):
        # The loss reads real tokens only; logits alone keep the padded computation's values everywhere.
        skip = labels is not None and _skip_padding(None, labels)
        sequence_output, _ = self.bert(input_ids, token_type_ids, attention_mask, False, skip_padding=skip)
        logits = self.classifier(self.dropout(sequence_output))
        if labels is None:
            return logits
        if attention_mask is not None:
            labels = labels.masked_fill(attention_mask == 0, -1)
        return _cross_entropy(logits.view(-1, self.num_labels), labels.reshape(-1))


class BertForQuestionAnswering(BertPreTrainedModel):
    """Start and end logits per token. Positions outside the sequence are clamped and ignored."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                start_positions=None, end_positions=None):
        # No skip_padding: the original's softmax over positions includes the padded ones.
        sequence_output, _ = self.bert(input_ids, token_type_ids, attention_mask, False)
        start_logits, end_logits = self.qa_outputs(sequence_output).split(1, dim=-1)
        start_logits, end_logits = start_logits.squeeze(-1), end_logits.squeeze(-1)
        if start_positions is None or end_positions is None:
            return QuestionAnsweringLogits(start_logits, end_logits)
        # As the original: a position past the end is clamped to seq_len and that index ignored.
        ignored_index = start_logits.shape[1]
        start_positions = start_positions.view(-1).clamp(0, ignored_index)
        end_positions = end_positions.view(-1).clamp(0, ignored_index)
        start_loss = F.cross_entropy(start_logits.float(), start_positions, ignore_index=ignored_index)
        end_loss = F.cross_entropy(end_logits.float(), end_positions, ignore_index=ignored_index)
        return (start_loss + end_loss) / 2
