"""Published figures the report puts beside ours (all in points, BERT-Base unless the label says).

Sources:
- PAPER: Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
  Understanding", NAACL 2019 (arXiv:1810.04805): Table 1 (GLUE *test* server, BERT-Base),
  Table 2 (SQuAD v1.1 dev), Table 3 (SQuAD v2.0 dev, BERT-Large only), Table 4 (SWAG dev).
- SEED: the pytorch-pretrained-BERT README (huggingface, 2019), examples section: bert-base-uncased
  MRPC dev accuracy "between 84% and 88%" over a few seeds; SQuAD v1.1 dev {"f1": 88.52,
  "exact_match": 81.22}; SWAG dev eval_accuracy 0.8062.
- MINILM: issue 6 of this project: HF transformers' run_glue with all-MiniLM-L6-v2 on MRPC
  (3 epochs, lr 5e-5, batch 32, max_seq_length 128) reaches dev accuracy 78.9 / F1 86.0.
"""

from __future__ import annotations

PAPER = "Devlin et al. 2019 (arXiv:1810.04805)"
SEED = "pytorch-pretrained-BERT README"
MINILM = "HF transformers, all-MiniLM-L6-v2 (issue 6)"

# task -> list of (figure, source)
REFERENCES: dict[str, list[tuple[str, str]]] = {
    "mrpc": [("F1 88.9 (GLUE test)", PAPER), ("acc 84-88 (dev, bert-base-uncased)", SEED),
             ("acc 78.9 / F1 86.0 (dev)", MINILM)],
    "cola": [("MCC 52.1 (GLUE test)", PAPER)],
    "sst2": [("acc 93.5 (GLUE test)", PAPER)],
    "stsb": [("Spearman 85.8 (GLUE test)", PAPER)],
    "qqp": [("F1 71.2 (GLUE test)", PAPER)],
    "mnli": [("acc 84.6 (GLUE test, matched)", PAPER)],
    "mnli-mm": [("acc 83.4 (GLUE test, mismatched)", PAPER)],
    "qnli": [("acc 90.5 (GLUE test)", PAPER)],
    "rte": [("acc 66.4 (GLUE test)", PAPER)],
    "squad1": [("EM 80.8 / F1 88.5 (dev)", PAPER), ("EM 81.22 / F1 88.52 (dev, bert-base-uncased)", SEED)],
    "squad2": [("EM 78.7 / F1 81.9 (dev, BERT-Large)", PAPER)],
    "swag": [("acc 81.6 (dev)", PAPER), ("acc 80.62 (dev, bert-base-uncased)", SEED)],
}


def references_for(task: str) -> list[tuple[str, str]]:
    """(figure, source) pairs for a task; empty for the demo tasks (nobody else has run them)."""
    return REFERENCES.get(task, [])
