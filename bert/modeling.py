"""BERT in PyTorch, op for op with Google's TensorFlow model, readable top to bottom.

    input_ids ─► BertEmbeddings ─► BertLayer x L ─► encoded_layers ─► BertPooler ─► pooled_output
                (word+pos+type,    (self-attention, feed-forward,        (tanh(dense([CLS])))
                 LayerNorm)         each followed by residual+LayerNorm)

Notation in the shape comments: B batch, T sequence length, H hidden size, A attention heads, D head size
(H = A * D), I intermediate size, V vocabulary size, C choices, N tokens computed when padding is skipped.

Names follow the TF checkpoint (``LayerNorm``, ``query``, ...): conversion is a plain name map. A block's
``attention_mask`` is the original's extended mask or our EncoderPlan (bert/model/plan.py), which also lets
the dense layers run on real tokens only ([N, H] instead of [B, T, H]).
"""

from __future__ import annotations

import logging
import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bert.file_utils import CONFIG_NAME, WEIGHTS_NAME, cached_path  # noqa: F401 (the original's names here)
from bert.formats.tf_checkpoint import load_tf_weights_in_bert  # noqa: F401
from bert.io.releases import archive_map
from bert.model.activations import ACT2FN, activation, gelu, swish  # noqa: F401 (the original's names here)
from bert.model.config import BertConfig
from bert.model.dropout import Dropout
from bert.model.losses import cross_entropy, masked_lm_loss, may_skip_padding, sequence_classification_loss
from bert.model.outputs import (BertModelOutput, BertModelOutputWithAttentions, PreTrainingLogits,
                                QuestionAnsweringLogits)
from bert.model.plan import IGNORED_LABELS, EncoderPlan, Packing, as_plan, check_inputs, make_plan
from bert.model.pretrained import PreTrainedBertMixin
from bert.model.weights import BERT_CONFIG_NAME, TF_WEIGHTS_NAME  # noqa: F401 (the original's names here)

logger = logging.getLogger(__name__)

PRETRAINED_MODEL_ARCHIVE_MAP = archive_map()  # shortcut name -> the Google release archive bert.io.hub fetches

Mask = Union[Tensor, EncoderPlan, None]  # a block's attention_mask: the original's [B, 1, 1, T], or our plan


class BertLayerNorm(nn.LayerNorm):
    """LayerNorm over the last dimension with BERT's epsilon, 1e-12, by default (the original's name; its
    parameters are ``weight`` and ``bias``, which old checkpoints call ``gamma`` and ``beta``)."""

    def __init__(self, hidden_size: int, eps: float = 1e-12):
        super().__init__(hidden_size, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)


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
        """[B, T] ids -> [B, T, H], or [N, H] when the plan packs them."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if plan is None or plan.packed is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)  # [T]
        else:
            position_ids = plan.packed % input_ids.shape[1]  # [N]
            input_ids = input_ids.reshape(-1).index_select(0, plan.packed)  # [B, T] -> [N]
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
        """[B, T, H] -> [B, A, T, D]."""
        return self._heads(x, 1)[0]

    def _heads(self, x: Tensor, parts: int) -> tuple[Tensor, ...]:
        x = x.view(x.shape[0], x.shape[1], parts, self.num_attention_heads, self.attention_head_size)
        return x.permute(2, 0, 3, 1, 4).unbind(0)  # [B, T, parts * H] -> parts x [B, A, T, D]

    def forward(self, hidden_states: Tensor, attention_mask: Mask) -> Tensor:
        """hidden_states [B, T, H], or [N, H] when the plan packs them -> the context, shaped alike
        ([B, 1, H] for the plan's first_only)."""
        plan = as_plan(attention_mask)
        # One matmul for the three projections: the parameters stay query/key/value (checkpoint names).
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])  # [3H, H]
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        hidden = self.query.weight.shape[0]
        if plan.first_only:
            k, v = self._heads(plan.pad(F.linear(hidden_states, weight[hidden:], bias[hidden:])), 2)
            (q,) = self._heads(F.linear(plan.first_tokens(hidden_states), weight[:hidden], bias[:hidden]), 1)
        else:
            q, k, v = self._heads(plan.pad(F.linear(hidden_states, weight, bias)), 3)  # 3 x [B, A, T, D]
        key_mask, dropout = plan.key_mask, self.dropout_prob if self.training else 0.0
        if plan.attentions is not None or (dropout > 0 and q.device.type == "cpu"):
            # The explicit path when the probabilities are wanted, or dropped out on the CPU (where
            # SDPA's dropout takes its slow math path).
            scores = (q / math.sqrt(self.attention_head_size)) @ k.transpose(-1, -2)  # [B, A, T, T]
            if key_mask is not None and key_mask.dtype == torch.bool:
                scores.masked_fill_(~key_mask, torch.finfo(scores.dtype).min)
            elif key_mask is not None:
                scores = scores + key_mask
            probs = scores.softmax(dim=-1)
            context = self.dropout(probs) @ v  # [B, A, T, D]
            if plan.attentions is not None:
                plan.attentions.append(probs)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout)
        context = context.transpose(1, 2).flatten(2)  # [B, A, T, D] -> [B, T, H]
        return context if plan.first_only else plan.unpad(context)


class BertSelfOutput(nn.Module):
    """Projection back to H, dropout, residual, LayerNorm: ends the attention (and, as BertOutput, the FFN) block."""

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

    def forward(self, input_tensor: Tensor, attention_mask: Mask) -> Tensor:
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
        return self.intermediate_act_fn(self.dense(hidden_states))  # [..., H] -> [..., I]


class BertOutput(BertSelfOutput):
    def __init__(self, config: BertConfig):
        super().__init__(config, config.intermediate_size)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden_states: Tensor, attention_mask: Mask) -> Tensor:
        attention_output = self.attention(hidden_states, attention_mask)
        return self.output(self.intermediate(attention_output), attention_output)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden_states: Tensor, attention_mask: Mask, output_all_encoded_layers: bool = True
                ) -> list[Tensor]:
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
    """tanh(dense(hidden state of the first token, [CLS])): [B, T, H] -> [B, H]."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class BertPreTrainedModel(PreTrainedBertMixin, nn.Module):
    """Base of every model: holds the config, loads and saves, and initialises the weights as the original,
    once, when the outermost model's constructor returns (see PreTrainedBertMixin.__init_subclass__)."""

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
    """The BERT encoder: embeddings, L transformer layers and the pooler.

    Returns ``(encoded_layers, pooled_output)``: a list with every layer's [B, T, H] output when
    output_all_encoded_layers (the default, as pytorch-pretrained-bert), else the last layer only; with
    output_attentions, a third field holds each layer's attention probabilities.

    A row whose mask is all zeros attends everywhere, as the original's additive -10000 mask makes it do.
    """

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None, output_all_encoded_layers: bool = True,
                output_attentions: bool = False, skip_padding: bool = False, packing: Optional[Packing] = None):
        """Encode [B, T] ids (token types default to 0, the mask to 1). skip_padding computes real tokens only:
        faster, with zeros at padded positions (no real token attends to them, so the others do not change).
        `packing` (from the data loader) says where they are; without it CPU batches are packed here and
        others run padded (bert/model/plan.py)."""
        check_inputs(self.config, input_ids, token_type_ids)
        plan = make_plan(input_ids, attention_mask, packing, skip_padding, output_attentions)
        layers = self.encoder(self.embeddings(input_ids, token_type_ids, plan), plan, output_all_encoded_layers)
        pooled_output = self.pooler(plan.first_tokens(layers[-1]))
        layers = [plan.pad(h) for h in layers]  # [N, H] -> [B, T, H]
        encoded = layers if output_all_encoded_layers else layers[-1]
        if output_attentions:
            return BertModelOutputWithAttentions(encoded, pooled_output, plan.attentions)
        return BertModelOutput(encoded, pooled_output)

    def pooled(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None,
               attention_mask: Optional[Tensor] = None, packing: Optional[Packing] = None) -> Tensor:
        """Only the pooled output [B, H], with the least work: real tokens only, and in the last layer only
        each sequence's first token (the one the pooler reads). Same values as forward's."""
        check_inputs(self.config, input_ids, token_type_ids)
        plan = make_plan(input_ids, attention_mask, packing, True, False, first_only=True)
        layers = self.encoder(self.embeddings(input_ids, token_type_ids, plan), plan, False)
        return self.pooler(layers[-1])  # [B, 1, H] -> [B, H]


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
    """Masked-LM scores [..., V]; the decoder weight is the word embedding matrix (tied), the bias its own."""

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


class BertForPreTraining(BertPreTrainedModel):
    """Masked LM + next sentence prediction.

    With both labels: the sum of the two losses. Otherwise (none, or only one of them, as the original):
    the logits, (prediction_scores [B, T, V], seq_relationship_score [B, 2]).
    """

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings.weight)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, masked_lm_labels=None,
                next_sentence_label=None, packing: Optional[Packing] = None):
        if masked_lm_labels is None or next_sentence_label is None:
            sequence_output, pooled_output = self.bert(input_ids, token_type_ids, attention_mask, False)
            return PreTrainingLogits(*self.cls(sequence_output, pooled_output))
        skip = may_skip_padding(attention_mask, masked_lm_labels, packing)
        sequence_output, pooled_output = self.bert(input_ids, token_type_ids, attention_mask, False,
                                                   skip_padding=skip, packing=packing)
        mlm_loss = masked_lm_loss(self.cls.predictions, sequence_output, masked_lm_labels, packing)
        seq_relationship_score = self.cls.seq_relationship(pooled_output)
        return mlm_loss + cross_entropy(seq_relationship_score.view(-1, 2), next_sentence_label.view(-1))


class BertForMaskedLM(BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertOnlyMLMHead(config, self.bert.embeddings.word_embeddings.weight)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, masked_lm_labels=None,
                packing: Optional[Packing] = None):
        # Logits alone keep the padded computation's values everywhere; the loss may skip padding.
        skip = masked_lm_labels is not None and may_skip_padding(attention_mask, masked_lm_labels, packing)
        sequence_output, _ = self.bert(input_ids, token_type_ids, attention_mask, False, skip_padding=skip,
                                       packing=packing if skip else None)
        if masked_lm_labels is None:
            return self.cls(sequence_output)  # [B, T, V]
        return masked_lm_loss(self.cls.predictions, sequence_output, masked_lm_labels, packing)


class BertForNextSentencePrediction(BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertOnlyNSPHead(config)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, next_sentence_label=None,
                packing: Optional[Packing] = None):
        pooled_output = self.bert.pooled(input_ids, token_type_ids, attention_mask, packing)
        seq_relationship_score = self.cls(pooled_output)  # [B, 2]
        if next_sentence_label is None:
            return seq_relationship_score
        return cross_entropy(seq_relationship_score.view(-1, 2), next_sentence_label.view(-1))


class BertForSequenceClassification(BertPreTrainedModel):
    """A linear classifier on the pooled output; regression (num_labels=1: MSE) and multi-label as HF's problem_type."""

    def __init__(self, config: BertConfig, num_labels: int = 2):
        super().__init__(config)
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.num_labels = num_labels
        self.bert = BertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                packing: Optional[Packing] = None):
        pooled_output = self.bert.pooled(input_ids, token_type_ids, attention_mask, packing)
        logits = self.classifier(self.dropout(pooled_output))  # [B, num_labels]
        if labels is None:
            return logits
        return sequence_classification_loss(logits, labels, getattr(self.config, "problem_type", None))


class BertForMultipleChoice(BertPreTrainedModel):
    """Inputs [B, C, T]; one score per choice from the pooled output."""

    def __init__(self, config: BertConfig, num_choices: int = 4):
        super().__init__(config)
        self.num_choices = num_choices
        self.bert = BertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                packing: Optional[Packing] = None):
        if input_ids.dim() != 3:
            raise ValueError(f"input_ids must be [batch, num_choices, seq], got {tuple(input_ids.shape)}")
        num_choices = input_ids.shape[1]
        flat = lambda t: None if t is None else t.reshape(-1, t.shape[-1])  # noqa: E731  [B, C, T] -> [B * C, T]
        pooled_output = self.bert.pooled(flat(input_ids), flat(token_type_ids), flat(attention_mask), packing)
        reshaped_logits = self.classifier(self.dropout(pooled_output)).view(-1, num_choices)  # [B, C]
        if labels is None:
            return reshaped_logits
        return cross_entropy(reshaped_logits, labels.view(-1))


class BertForTokenClassification(BertPreTrainedModel):
    """A label per token; the loss covers tokens with attention_mask 1 and a label other than -1/-100."""

    def __init__(self, config: BertConfig, num_labels: int = 2):
        super().__init__(config)
        self.num_labels = num_labels
        self.bert = BertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                packing: Optional[Packing] = None):
        # The loss reads real tokens only (padding's labels are masked below), so it may skip padding; logits
        # alone keep the padded computation's values everywhere, unless a loader's packing asks for real tokens.
        skip = labels is not None or packing is not None
        sequence_output, _ = self.bert(input_ids, token_type_ids, attention_mask, False, skip_padding=skip,
                                       packing=packing if skip else None)
        logits = self.classifier(self.dropout(sequence_output))  # [B, T, num_labels]
        if labels is None:
            return logits
        if attention_mask is not None:
            labels = labels.masked_fill(attention_mask == 0, IGNORED_LABELS[0])
        return cross_entropy(logits.view(-1, self.num_labels), labels.reshape(-1))


class BertForQuestionAnswering(BertPreTrainedModel):
    """Start and end logits per token. Positions outside the sequence are clamped and ignored."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                start_positions=None, end_positions=None, packing: Optional[Packing] = None):
        # Logits alone skip padding if a loader's packing asks; the loss keeps it (the original's softmax has it).
        skip = packing is not None and (start_positions is None or end_positions is None)
        sequence_output, _ = self.bert(input_ids, token_type_ids, attention_mask, False, skip_padding=skip,
                                       packing=packing if skip else None)
        start_logits, end_logits = self.qa_outputs(sequence_output).split(1, dim=-1)  # 2 x [B, T, 1]
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
