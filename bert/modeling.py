"""BERT in PyTorch, op for op with Google's TensorFlow model, readable top to bottom.

Module and parameter names follow the TF checkpoint (``LayerNorm``, ``query``, ``dense``, ...) so that
conversion is a plain name map and saved weights load in other BERT implementations.

    input_ids ─► BertEmbeddings ─► BertLayer x N ─► encoded_layers ─► BertPooler ─► pooled_output
                (word+pos+type,    (self-attention, feed-forward,        (tanh(dense([CLS])))
                 LayerNorm)         each followed by residual+LayerNorm)
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bert.config import BertConfig
from bert.weights import PreTrainedBertMixin


def gelu(x: Tensor) -> Tensor:
    """The exact GELU, x * Phi(x) with the erf form (HF, pytorch-pretrained-bert)."""
    return F.gelu(x)


def gelu_tanh(x: Tensor) -> Tensor:
    """The tanh approximation of GELU that Google's TF BERT used from February 2019 on."""
    return F.gelu(x, approximate="tanh")


ACT2FN = {
    "gelu": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


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
    seq_len = input_ids.shape[1]
    if seq_len > config.max_position_embeddings:
        raise ValueError(
            f"sequence length {seq_len} exceeds max_position_embeddings "
            f"({config.max_position_embeddings}): truncate the input"
        )
    if input_ids.numel() == 0:
        return
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= config.vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"input_ids contains id {bad}, outside the vocabulary [0, {config.vocab_size})")
    if token_type_ids is not None and token_type_ids.numel():
        low, high = int(token_type_ids.min()), int(token_type_ids.max())
        if low < 0 or high >= config.type_vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"token_type_ids contains {bad}, outside [0, {config.type_vocab_size}) (type_vocab_size)"
            )


class BertEmbeddings(nn.Module):
    """Word + position + token type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        # padding_idx=0: the [PAD] row gets no gradient, as in pytorch-pretrained-bert and HF.
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_prob = config.attention_probs_dropout_prob
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _split_heads(self, x: Tensor) -> Tensor:
        # [batch, seq, hidden] -> [batch, heads, seq, head_size]
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_size).transpose(1, 2)

    def forward(
        self, hidden_states: Tensor, key_mask: Optional[Tensor], output_attentions: bool = False
    ) -> tuple[Tensor, Optional[Tensor]]:
        """key_mask: bool [batch, 1, 1, seq], True where a key may be attended to (None: all)."""
        q = self._split_heads(self.query(hidden_states))
        k = self._split_heads(self.key(hidden_states))
        v = self._split_heads(self.value(hidden_states))
        if output_attentions:
            # The explicit path, only when the probabilities themselves are wanted.
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size)
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(dim=-1)
            context = self.dropout(probs) @ v
        else:
            probs = None
            context = F.scaled_dot_product_attention(
                q, k, v, attn_mask=key_mask, dropout_p=self.dropout_prob if self.training else 0.0
            )
        context = context.transpose(1, 2).flatten(2)  # [batch, seq, hidden]
        return context, probs


class BertSelfOutput(nn.Module):
    """Projection after attention, dropout, residual, LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden_states: Tensor, key_mask: Optional[Tensor], output_attentions: bool = False):
        context, probs = self.self(hidden_states, key_mask, output_attentions)
        return self.output(context, hidden_states), probs


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class BertOutput(nn.Module):
    """Projection after the feed-forward block, dropout, residual, LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden_states: Tensor, key_mask: Optional[Tensor], output_attentions: bool = False):
        attention_output, probs = self.attention(hidden_states, key_mask, output_attentions)
        return self.output(self.intermediate(attention_output), attention_output), probs


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden_states: Tensor, key_mask: Optional[Tensor], output_attentions: bool = False):
        all_layers, all_probs = [], []
        for layer in self.layer:
            hidden_states, probs = layer(hidden_states, key_mask, output_attentions)
            all_layers.append(hidden_states)
            all_probs.append(probs)
        return all_layers, all_probs


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

    def __init__(self, config: BertConfig):
        super().__init__()
        if not isinstance(config, BertConfig):
            raise ValueError(f"config must be a BertConfig, got {type(config).__name__}")
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
    """

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)
        self.apply(self.init_bert_weights)

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Optional[Tensor] = None,
        attention_mask: Optional[Tensor] = None,
        output_all_encoded_layers: bool = True,
        output_attentions: bool = False,
    ):
        check_inputs(self.config, input_ids, token_type_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        # [batch, seq] 1/0 -> bool [batch, 1, 1, seq]: which keys each query may attend to.
        key_mask = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        embedding_output = self.embeddings(input_ids, token_type_ids)
        layers, probs = self.encoder(embedding_output, key_mask, output_attentions)
        pooled_output = self.pooler(layers[-1])
        encoded = layers if output_all_encoded_layers else layers[-1]
        if output_attentions:
            return BertModelOutputWithAttentions(encoded, pooled_output, probs)
        return BertModelOutput(encoded, pooled_output)


# ----------------------------------------------------------------------------------------------
# Heads. Each one: self.bert = BertModel(config), dropout where the original has it, a linear layer.
# With labels a head returns its loss; without, its logits.


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class BertLMPredictionHead(nn.Module):
    """Masked-LM scores; the decoder weight is the word embedding matrix (tied), the bias its own."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.decoder(self.transform(hidden_states)) + self.bias


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)

    def forward(self, sequence_output: Tensor) -> Tensor:
        return self.predictions(sequence_output)


class BertOnlyNSPHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled_output: Tensor) -> Tensor:
        return self.seq_relationship(pooled_output)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, sequence_output: Tensor, pooled_output: Tensor):
        return self.predictions(sequence_output), self.seq_relationship(pooled_output)


def _cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy ignoring label -1 (the original's convention) and -100 (HF's)."""
    labels = labels.masked_fill(labels == -100, -1)
    return F.cross_entropy(logits.float(), labels, ignore_index=-1)


class BertForPreTraining(BertPreTrainedModel):
    """Masked LM + next sentence prediction. Loss: the sum of whichever labels are given."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                masked_lm_labels=None, next_sentence_label=None):
        sequence_output, pooled_output = self.bert(input_ids, token_type_ids, attention_mask, False)
        prediction_scores, seq_relationship_score = self.cls(sequence_output, pooled_output)
        if masked_lm_labels is None and next_sentence_label is None:
            return PreTrainingLogits(prediction_scores, seq_relationship_score)
        loss = prediction_scores.new_zeros((), dtype=torch.float32)
        if masked_lm_labels is not None:
            loss = loss + _cross_entropy(prediction_scores.view(-1, self.config.vocab_size),
                                         masked_lm_labels.view(-1))
        if next_sentence_label is not None:
            loss = loss + _cross_entropy(seq_relationship_score.view(-1, 2), next_sentence_label.view(-1))
        return loss


class BertForMaskedLM(BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertOnlyMLMHead(config, self.bert.embeddings.word_embeddings)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, masked_lm_labels=None):
        sequence_output, _ = self.bert(input_ids, token_type_ids, attention_mask, False)
        prediction_scores = self.cls(sequence_output)
        if masked_lm_labels is None:
            return prediction_scores
        return _cross_entropy(prediction_scores.view(-1, self.config.vocab_size), masked_lm_labels.view(-1))


class BertForNextSentencePrediction(BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertOnlyNSPHead(config)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, next_sentence_label=None):
        _, pooled_output = self.bert(input_ids, token_type_ids, attention_mask, False)
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
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None):
        _, pooled_output = self.bert(input_ids, token_type_ids, attention_mask, False)
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
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None):
        if input_ids.dim() != 3:
            raise ValueError(f"input_ids must be [batch, num_choices, seq], got {tuple(input_ids.shape)}")
        num_choices = input_ids.shape[1]
        flat = lambda t: None if t is None else t.reshape(-1, t.shape[-1])  # noqa: E731
        _, pooled_output = self.bert(flat(input_ids), flat(token_type_ids), flat(attention_mask), False)
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
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None):
        sequence_output, _ = self.bert(input_ids, token_type_ids, attention_mask, False)
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
