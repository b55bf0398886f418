"""Our package against the real pytorch-pretrained-bert 0.6.2 (a test-only oracle), call for call.

Models: every class, loaded by each package's from_pretrained from one 0.6.2-style folder (bert_config.json
+ pytorch_model.bin with gamma/beta names), on padded batches with rows whose attention mask is all zeros;
our fp32 outputs and losses within 1e-5 max abs difference of the original's, as run in fp32 or as run in
float64. (Either, because on an all-zero-mask row the original's fp32 scores + -10000 keep only about 1e-3
absolute precision: its fp32 outputs there are 3e-4 to 6e-4 away from its exact values, and ours may
reproduce that rounding or be exact. Elsewhere its fp32 and float64 runs agree to a few 1e-6.)
Optimizer: BertAdam over 25 steps; ours with foreach=False bit-identical (torch.equal), ours by default
within 1e-6 relative; get_lr equal. Schedules: get_lr exactly equal. Tokenizers: 0 mismatches on every
GLUE text field and SQuAD dev text, cased and uncased.
"""

from __future__ import annotations

import copy
import json
import logging
import math

import pytest
import torch

from compat_oracle_helpers import (
    google_config,
    max_abs_diff,
    original,
    ours,
    skip_unless_real_original,
    write_original_folder,
)

pytest.importorskip("pytorch_pretrained_bert")
skip_unless_real_original()
# The original's BertAdam calls add_(Number, Tensor), an overload torch deprecates: its warning, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:This overload of add_ is deprecated:UserWarning")

FP32_TOL = 1e-5
SEED = 1234  # the original's random initialisation: heads, and the whole tiny model
# A tiny random model. initializer_range 0.1, not 0.02, so that attention is peaked: with 0.02, an all-zero-mask
# row attending to every position (as the original) or uniformly (as a -inf mask on every key makes it)
# differs by 2e-5 in the pooled output; with 0.1 by 5e-2 (MiniLM: 0.2).
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu", hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1, initializer_range=0.1)  # fmt: skip
CONFIGS = ("tiny", "minilm")


# ---------------------------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def encoders(minilm_dir):
    """Config name -> (Google's config fields, encoder weights with HF names; None: random)."""
    from safetensors.torch import load_file

    minilm = json.loads((minilm_dir / "config.json").read_text(encoding="utf-8"))
    weights = load_file(str(minilm_dir / "model.safetensors"))
    weights.pop("embeddings.position_ids", None)  # a buffer, not a weight
    return {"tiny": (TINY, None), "minilm": (google_config(minilm), weights)}


def original_dump(class_name: str, kwargs: dict, config: dict, encoder) -> dict[str, torch.Tensor]:
    """The state dict of the original's model: heads random (seeded), encoder from `encoder` if given.

    BertModel gets a BertForPreTraining dump, as converted Google checkpoints are: ``bert.`` prefix and heads.
    """
    modeling = original("modeling")
    torch.manual_seed(SEED)
    dump_class = "BertForPreTraining" if class_name == "BertModel" else class_name
    model = getattr(modeling, dump_class)(modeling.BertConfig.from_dict(config), **kwargs)
    if encoder is not None:
        model.bert.load_state_dict(encoder, strict=True)
    return model.state_dict()


@pytest.fixture(scope="module")
def folders(encoders, tmp_path_factory):
    """(config name, class name, kwargs) -> a 0.6.2-style model folder, written once per module; its weights
    are deleted at the end (90 MB with MiniLM's, and pytest keeps the last three runs' folders)."""
    cache = {}

    def folder(config_name: str, class_name: str, kwargs: dict):
        key = (config_name, class_name, tuple(sorted(kwargs.items())))
        if key not in cache:
            config, encoder = encoders[config_name]
            cache[key] = write_original_folder(tmp_path_factory.mktemp(f"{config_name}-{class_name}"), config,
                                               original_dump(class_name, kwargs, config, encoder))
        return cache[key]

    yield folder
    for path in cache.values():
        (path / "pytorch_model.bin").unlink(missing_ok=True)


def load_pair(folder, class_name: str, kwargs: dict):
    """(ours, original, original in float64) loaded from the same folder by each package's from_pretrained,
    in eval mode (the float64 one converted after loading; see the module docstring)."""
    theirs = getattr(original(), class_name).from_pretrained(str(folder), **kwargs).eval()
    mine = getattr(ours(), class_name).from_pretrained(str(folder), **kwargs)
    return mine.eval(), theirs, copy.deepcopy(theirs).double()


def _to_float32(output):
    if isinstance(output, torch.Tensor):
        return output.float() if output.dtype == torch.float64 else output
    return type(output)(_to_float32(x) for x in output)


def make_batch(vocab_size: int) -> dict[str, torch.Tensor]:
    """Six rows of 24 tokens, both segments: a full row, three padded ones, two with an all-zero mask.

    Row 3's mask is all zeros over real-looking ids, row 5's over a padded sequence: the original's additive
    -10000 mask then shifts every score of the row alike, so such a row attends to all its positions.
    """
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, vocab_size, (6, 24), generator=g)
    attention_mask = torch.ones_like(input_ids)
    for row, length in ((1, 15), (2, 6), (3, 0), (4, 20), (5, 0)):
        attention_mask[row, length:] = 0
    input_ids[[1, 2, 4]] = input_ids[[1, 2, 4]] * attention_mask[[1, 2, 4]]  # [PAD] is id 0
    input_ids[5, 9:] = 0
    token_type_ids = torch.zeros_like(input_ids)
    for row, start, end in ((0, 10, 24), (1, 8, 15), (2, 3, 6), (3, 12, 24), (4, 9, 20)):
        token_type_ids[row, start:end] = 1
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}


def head_inputs(class_name: str, batch: dict) -> dict:
    if class_name != "BertForMultipleChoice":
        return batch
    return {k: v.view(2, 3, -1) for k, v in batch.items()}  # two questions, three choices each


def label_sets(class_name: str, batch: dict, vocab_size: int) -> dict[str, dict]:
    """Named label keyword sets of one head, as the original takes them (-1: ignored)."""
    g = torch.Generator().manual_seed(5)
    mask = batch["attention_mask"].bool()

    def mlm(where):  # 30% of the positions in `where`, labelled with random ids; -1 elsewhere
        labels = torch.full_like(batch["input_ids"], -1)
        picks = (torch.rand(labels.shape, generator=g) < 0.3) & where
        labels[picks] = torch.randint(0, vocab_size, (int(picks.sum()),), generator=g)
        return labels

    mlm_real, mlm_anywhere = mlm(mask), mlm(torch.ones_like(mask))  # the second also on padding
    nsp = torch.tensor([0, 1, 1, 0, -1, 1])
    sets = {
        "BertModel": {},
        "BertForPreTraining": {
            "both labels": {"masked_lm_labels": mlm_real, "next_sentence_label": nsp},
            "both labels, MLM ones on padding too": {"masked_lm_labels": mlm_anywhere, "next_sentence_label": nsp},
            # one label alone: the original returns (prediction_scores, seq_relationship_score)
            "masked_lm_labels only": {"masked_lm_labels": mlm_real},
            "next_sentence_label only": {"next_sentence_label": nsp},
        },
        "BertForMaskedLM": {
            "masked_lm_labels": {"masked_lm_labels": mlm_real},
            "masked_lm_labels on padding too": {"masked_lm_labels": mlm_anywhere},
        },
        "BertForNextSentencePrediction": {"next_sentence_label": {"next_sentence_label": nsp}},
        "BertForSequenceClassification": {"labels": {"labels": torch.tensor([2, 0, 1, 1, 0, 2])}},
        "BertForMultipleChoice": {"labels": {"labels": torch.tensor([1, 2])}},
        # labels on padding too: the original's loss reads attention_mask 1 positions only
        "BertForTokenClassification": {"labels": {"labels": torch.randint(0, 5, mask.shape, generator=g)}},
        # 30 and 60 are past the end: clamped to 24 and ignored
        "BertForQuestionAnswering": {"start and end positions": {"start_positions": torch.tensor([3, 30, 2, 0, 5, 23]),
                                                                 "end_positions": torch.tensor([5, 7, 60, 1, 5, 23])}},
    }  # fmt: skip
    return sets[class_name]


HEADS = [
    ("BertForPreTraining", {}),
    ("BertForMaskedLM", {}),
    ("BertForNextSentencePrediction", {}),
    ("BertForSequenceClassification", {"num_labels": 3}),
    ("BertForMultipleChoice", {"num_choices": 3}),
    ("BertForTokenClassification", {"num_labels": 5}),
    ("BertForQuestionAnswering", {}),
]


def _compare(what: str, models, call, problems: list[str]) -> None:
    """call(model) on ours and on the original in fp32 and float64; append to `problems` what differs:
    structure, values farther than FP32_TOL from both runs of the original, or an error of ours."""
    mine, theirs, theirs64 = models
    ref32, ref64 = call(theirs), _to_float32(call(theirs64))
    try:
        out = call(mine)
        diff32, diff64 = max_abs_diff(out, ref32, what), max_abs_diff(out, ref64, what)
    except Exception as err:  # noqa: BLE001 -- a failure of ours is the finding, reported with the rest
        problems.append(f"{what}: {type(err).__name__}: {err}")
        return
    print(f"{what}: max abs diff {diff32:.2e} (original fp32), {diff64:.2e} (original float64)")
    if not min(diff32, diff64) <= FP32_TOL:
        problems.append(f"{what}: max abs diff {diff32:.2e} from the original in fp32, {diff64:.2e} in float64 "
                        f"(> {FP32_TOL:.0e})")


@pytest.mark.parametrize("config_name", CONFIGS)
def test_bert_model_matches_original(config_name, folders, encoders):
    """Every encoded layer (all positions, padding and all-zero-mask rows too) and the pooled output, with
    output_all_encoded_layers True and False, called positionally as 0.6.2's scripts do: within 1e-5."""
    models = load_pair(folders(config_name, "BertModel", {}), "BertModel", {})
    batch = make_batch(encoders[config_name][0]["vocab_size"])
    args = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    problems: list[str] = []
    with torch.no_grad():
        for all_layers in (True, False):
            _compare(f"output_all_encoded_layers={all_layers}", models, lambda m: m(*args, all_layers), problems)
        # no mask, no token types: the defaults (all ones, all zeros)
        _compare("input_ids only", models, lambda m: m(batch["input_ids"]), problems)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("class_name, kwargs", HEADS, ids=[name for name, _ in HEADS])
def test_head_matches_original(config_name, class_name, kwargs, folders, encoders):
    """Logits without labels, and per label set the loss (or, for BertForPreTraining with one label or none,
    the original's (prediction_scores, seq_relationship_score)): within 1e-5 (see the module docstring)."""
    folder = folders(config_name, class_name, kwargs)
    models = load_pair(folder, class_name, kwargs)
    (folder / "pytorch_model.bin").unlink()  # used once: free the disk now
    vocab_size = encoders[config_name][0]["vocab_size"]
    batch = make_batch(vocab_size)
    inputs = head_inputs(class_name, batch)
    problems: list[str] = []
    with torch.no_grad():
        _compare("no labels", models, lambda m: m(**inputs), problems)
        for name, labels in label_sets(class_name, batch, vocab_size).items():
            # clones: the original clamps QA positions in place
            _compare(name, models, lambda m: m(**inputs, **{k: v.clone() for k, v in labels.items()}), problems)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("config_name", CONFIGS)
def test_our_fast_paths_agree_on_all_zero_mask_rows(config_name, folders, encoders):
    """Ours only, on the batch with all-zero-mask rows: output_attentions=True (explicit softmax) equals the
    default path everywhere; skip_padding=True equals it on real tokens and in the pooled output of every
    row; BertModel.pooled too. Within 1e-5."""
    mine = ours().BertModel.from_pretrained(str(folders(config_name, "BertModel", {}))).eval()
    batch = make_batch(encoders[config_name][0]["vocab_size"])
    real = batch["attention_mask"].bool()
    problems = []
    with torch.no_grad():
        layers, pooled = mine(**batch)[:2]
        with_probs = mine(**batch, output_attentions=True)
        skipped = mine(**batch, skip_padding=True)
        pooled_only = mine.pooled(**batch)
    checks = {
        "output_attentions=True, layers": max_abs_diff(with_probs[0], layers),
        "output_attentions=True, pooled": max_abs_diff(with_probs[1], pooled),
        "skip_padding=True, layers at real tokens": max(
            max_abs_diff(a[real], b[real]) for a, b in zip(skipped[0], layers)),
        "skip_padding=True, pooled": max_abs_diff(skipped[1], pooled),
        "pooled()": max_abs_diff(pooled_only, pooled),
    }
    for what, diff in checks.items():
        print(f"{what}: max abs diff {diff:.2e}")
        if not diff <= FP32_TOL:
            problems.append(f"{what}: max abs diff {diff:.2e} > {FP32_TOL:.0e} vs the default path")
    assert not problems, "\n".join(problems)


def test_from_pretrained_returns_the_originals_mode(folders):
    """0.6.2's from_pretrained returns the model as nn.Module makes it (training mode); ours the same."""
    folder = folders("tiny", "BertModel", {})
    theirs = original().BertModel.from_pretrained(str(folder)).training
    mine = ours().BertModel.from_pretrained(str(folder)).training
    assert mine == theirs, f"from_pretrained: ours returns training={mine}, 0.6.2 training={theirs}"


# ------------------------------------------------------------------------------------------- optimizer
STEPS, T_TOTAL = 25, 25
SCHEDULE_NAMES = [None, "none", "warmup_linear", "warmup_cosine", "warmup_constant"]
SCHEDULE_OBJECTS = [  # (class in each package's optimization module, its arguments)
    ("ConstantLR", {}),
    ("WarmupConstantSchedule", {"warmup": 0.1, "t_total": T_TOTAL}),
    ("WarmupLinearSchedule", {"warmup": 0.1, "t_total": T_TOTAL}),
    ("WarmupCosineSchedule", {"warmup": 0.1, "t_total": T_TOTAL, "cycles": 0.5}),
    ("WarmupCosineSchedule", {"warmup": 0.1, "t_total": T_TOTAL, "cycles": 2}),
    ("WarmupCosineWithHardRestartsSchedule", {"warmup": 0.1, "t_total": T_TOTAL, "cycles": 2}),
    ("WarmupCosineWithWarmupRestartsSchedule", {"warmup": 0.05, "t_total": T_TOTAL, "cycles": 3}),
]
SCHEDULE_CASES = [("name", name) for name in SCHEDULE_NAMES] + [("object", spec) for spec in SCHEDULE_OBJECTS]
SHAPES = [(6, 5), (11, 4), (5,), (4,)]


def _schedule_id(schedule) -> str:
    kind, spec = schedule
    return repr(spec) if kind == "name" else f"{spec[0]}({','.join(f'{k}={v}' for k, v in spec[1].items())})"


def gradient_sequence() -> list[list[torch.Tensor | None]]:
    """Per step, a gradient per parameter: scales from 1e-3 to 10 (so some are clipped by max_grad_norm 1.0,
    some not); parameter 1 has none every third step (it then keeps its own step count, as in the original)."""
    g = torch.Generator().manual_seed(7)
    sequence = []
    for step in range(STEPS):
        scales = 10 ** (torch.rand(len(SHAPES), generator=g, dtype=torch.float64) * 4 - 3)
        grads = [torch.randn(shape, generator=g) * float(s) for shape, s in zip(SHAPES, scales)]
        if step % 3 == 2:
            grads[1] = None
        sequence.append(grads)
    return sequence


def initial_parameters() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(shape, generator=g) for shape in SHAPES]


def run_bert_adam(module, schedule, weight_decay: float, grads, **extra):
    """25 BertAdam steps of `module` on seeded parameters in two groups (decay as given; none, lr 5e-3).

    Returns:
        (optimizer, parameters, get_lr() before the first step and after each, the schedule object or None).
    """
    params = [torch.nn.Parameter(p) for p in initial_parameters()]
    kind, spec = schedule
    if kind == "name":
        schedule_obj, kwargs = None, {"schedule": spec, "warmup": 0.1, "t_total": T_TOTAL}
    else:
        schedule_obj = getattr(module, spec[0])(**spec[1])
        kwargs = {"schedule": schedule_obj}
    groups = [{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0, "lr": 5e-3}]
    optimizer = module.BertAdam(groups, lr=1e-2, weight_decay=weight_decay, max_grad_norm=1.0, **kwargs, **extra)
    lrs = [optimizer.get_lr()]  # [0] in the original
    for step_grads in grads:
        for p, grad in zip(params, step_grads):
            p.grad = None if grad is None else grad.clone()  # both clip gradients in place
        optimizer.step()
        lrs.append(optimizer.get_lr())
    return optimizer, params, lrs, schedule_obj


@pytest.mark.parametrize("weight_decay", [0.01, 0.0], ids=["decay", "no-decay"])
@pytest.mark.parametrize("schedule", SCHEDULE_CASES, ids=[_schedule_id(s) for s in SCHEDULE_CASES])
def test_bert_adam_matches_original(schedule, weight_decay):
    """25 steps, same parameters and gradients: ours with foreach=False bit-identical to the original
    (parameters and next_m / next_v); ours by default within 1e-6 relative (max abs diff / max abs value per
    tensor); get_lr() equal before and after every step; a schedule object passed stays the group's "schedule"."""
    grads = gradient_sequence()
    ref_opt, ref_params, ref_lrs, _ = run_bert_adam(original("optimization"), schedule, weight_decay, grads)
    assert all(not torch.equal(p.detach(), q) for p, q in zip(ref_params, initial_parameters()))  # all moved
    problems = []
    for mode, extra in (("foreach=False", {"foreach": False}), ("default", {})):
        opt, params, lrs, schedule_obj = run_bert_adam(ours("optimization"), schedule, weight_decay, grads, **extra)
        if lrs != ref_lrs:
            problems.append(f"{mode}: get_lr() {lrs[:3]}... differs from 0.6.2's {ref_lrs[:3]}...")
        group_schedule = opt.param_groups[0]["schedule"]
        if schedule_obj is not None and group_schedule is not schedule_obj:
            problems.append(f"{mode}: param_groups[0]['schedule'] is {group_schedule!r}, not the object passed")
        ref_schedule = ref_opt.param_groups[0]["schedule"]
        if schedule_obj is None and type(group_schedule).__name__ != type(ref_schedule).__name__:
            problems.append(f"{mode}: param_groups[0]['schedule'] is {group_schedule!r}, 0.6.2 has a "
                            f"{type(ref_schedule).__name__}")
        for i, (p, q) in enumerate(zip(params, ref_params)):
            if mode == "foreach=False":
                state, ref_state = opt.state[p], ref_opt.state[q]
                same = {"param": torch.equal(p, q), "step": state.get("step") == ref_state["step"]}
                same.update({k: k in state and torch.equal(state[k], ref_state[k]) for k in ("next_m", "next_v")})
                problems += [f"{mode}: parameter {i}: {k} not bit-identical" for k, ok in same.items() if not ok]
            else:
                rel = (p.detach() - q.detach()).abs().max().item() / q.detach().abs().max().item()
                if not rel <= 1e-6:
                    problems.append(f"{mode}: parameter {i}: relative difference {rel:.2e} > 1e-6")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------- schedules
SCHEDULE_VALUE_CASES = SCHEDULE_OBJECTS + [
    ("WarmupLinearSchedule", {"warmup": 0.0, "t_total": T_TOTAL}),
    ("WarmupLinearSchedule", {"warmup": -1, "t_total": T_TOTAL}),  # -1: no warmup
    ("WarmupCosineSchedule", {"warmup": 0.2, "t_total": -1}),  # no t_total: multiplier 1
    ("WarmupConstantSchedule", {"warmup": 0.5, "t_total": 7}),
]


@pytest.mark.parametrize("cls_name, kwargs", SCHEDULE_VALUE_CASES,
                         ids=[_schedule_id(("object", s)) for s in SCHEDULE_VALUE_CASES])
def test_schedule_values_equal_originals(cls_name, kwargs):
    """get_lr(step) for steps 0 .. 2 * t_total (beyond t_total too): exactly the original's floats."""
    mine = getattr(ours("optimization"), cls_name)(**kwargs)
    theirs = getattr(original("optimization"), cls_name)(**kwargs)
    t_total = kwargs.get("t_total", -1)
    steps = range(2 * (t_total if t_total > 0 else T_TOTAL) + 1)
    got = [mine.get_lr(step) for step in steps]
    expected = [theirs.get_lr(step) for step in steps]
    bad = [(step, a, b) for step, a, b in zip(steps, got, expected) if not (a == b or math.isnan(a) and math.isnan(b))]
    assert not bad, f"(step, ours, 0.6.2) where they differ: {bad[:10]}"


WARNING_CASES = [("name", name) for name in ("warmup_linear", "warmup_cosine", "warmup_constant", "none")] + [
    ("object", spec) for spec in SCHEDULE_OBJECTS
]


def _warning_steps(module, schedule, caplog) -> list[int]:
    """The steps (0-based calls of step()) during which `module`'s logger warned, over 2 * t_total steps."""
    p = torch.nn.Parameter(torch.ones(3))
    kind, spec = schedule
    kwargs = {"schedule": spec, "warmup": 0.1, "t_total": T_TOTAL} if kind == "name" else {
        "schedule": getattr(module, spec[0])(**spec[1])}
    optimizer = module.BertAdam([p], lr=1e-3, **kwargs)
    steps = []
    for step in range(2 * T_TOTAL):
        caplog.clear()
        p.grad = torch.full_like(p, 0.1)
        optimizer.step()
        if any(r.name == module.__name__ and r.levelno == logging.WARNING for r in caplog.records):
            steps.append(step)
    return steps


@pytest.mark.parametrize("schedule", WARNING_CASES, ids=[_schedule_id(s) for s in WARNING_CASES])
def test_training_beyond_t_total_warns_as_original(schedule, caplog):
    """BertAdam past t_total: ours logs a warning (on its optimization module's logger) iff the original does,
    starting at the same step; the original does for warmup_linear and warmup_cosine (and the cosine family)."""
    mine_module, their_module = ours("optimization"), original("optimization")
    caplog.set_level(logging.WARNING, logger=their_module.__name__)
    caplog.set_level(logging.WARNING, logger=mine_module.__name__)
    expected = _warning_steps(their_module, schedule, caplog)
    got = _warning_steps(mine_module, schedule, caplog)
    kind, spec = schedule
    if spec in ("warmup_linear", "warmup_cosine") or (kind == "object" and spec[0] == "WarmupLinearSchedule"):
        assert expected and expected[0] == T_TOTAL + 1  # the oracle itself: 'step' T_TOTAL + 1 is past t_total
    assert bool(got) == bool(expected), f"ours warned at steps {got}, 0.6.2 at {expected}"
    assert got[:1] == expected[:1], f"ours first warned at step {got[:1]}, 0.6.2 at {expected[:1]}"


def test_schedule_get_lr_warns_beyond_t_total_as_original(caplog):
    """A schedule's own get_lr(step) past t_total warns for warmup_linear / warmup_cosine, in both packages."""
    for cls_name, warns in (("WarmupLinearSchedule", True), ("WarmupCosineSchedule", True),
                            ("WarmupConstantSchedule", False), ("ConstantLR", False)):
        for module in (original("optimization"), ours("optimization")):
            caplog.set_level(logging.WARNING, logger=module.__name__)
            schedule = getattr(module, cls_name)(warmup=0.1, t_total=T_TOTAL)
            caplog.clear()
            schedule.get_lr(T_TOTAL + 5)
            warned = any(r.name == module.__name__ and r.levelno == logging.WARNING for r in caplog.records)
            assert warned == warns, f"{module.__name__}.{cls_name}.get_lr({T_TOTAL + 5}): warned={warned}"


# ------------------------------------------------------------------------------------------ tokenizers
@pytest.fixture(scope="module")
def corpus(shared_data) -> dict[str, list[str]]:
    """Unique texts of every GLUE text field and SQuAD dev context / question ("lines"), and their unique
    space-delimited chunks ("chunks")."""
    from test_tokenization_parity import corpus_lines  # the project's reader of ../shared/data

    lines = sorted({text for texts in corpus_lines(shared_data).values() for text in texts})
    chunks = sorted({chunk for line in lines for chunk in line.split(" ")})
    return {"lines": lines, "chunks": chunks}


@pytest.fixture(scope="module")
def vocab_file(minilm_dir) -> str:
    return str(minilm_dir / "vocab.txt")


def _mismatches(texts, ours_fn, theirs_fn, show: int = 5) -> int:
    bad = [(t, a, b) for t in texts if (a := ours_fn(t)) != (b := theirs_fn(t))]
    for text, a, b in bad[:show]:
        print(f"   {text[:80]!r}\n      ours {a[:20]}\n      0.6.2 {b[:20]}")
    return len(bad)


@pytest.mark.parametrize("do_lower_case", [True, False], ids=["uncased", "cased"])
def test_bert_tokenizer_matches_original_on_corpus_chunks(corpus, vocab_file, do_lower_case):
    """BertTokenizer.tokenize and convert_tokens_to_ids on every unique space-delimited chunk of the corpus:
    0 mismatches. (Google's algorithm works on such chunks one by one: U+0020 is never removed and always
    splits, so this covers every line's content; the slow test below runs the whole lines.)"""
    mine = ours("tokenization").BertTokenizer(vocab_file, do_lower_case=do_lower_case)
    theirs = original("tokenization").BertTokenizer(vocab_file, do_lower_case=do_lower_case)
    texts = corpus["chunks"]
    bad = _mismatches(texts, lambda t: mine.convert_tokens_to_ids(mine.tokenize(t)),
                      lambda t: theirs.convert_tokens_to_ids(theirs.tokenize(t)))
    print(f"do_lower_case={do_lower_case}: {len(texts)} chunks, {bad} mismatches")
    assert len(texts) > 50_000 and bad == 0


@pytest.mark.parametrize("do_lower_case", [True, False], ids=["uncased", "cased"])
def test_basic_and_wordpiece_tokenizers_match_original(corpus, vocab_file, do_lower_case):
    """BasicTokenizer(do_lower_case).tokenize on every unique chunk, WordpieceTokenizer(vocab).tokenize on
    every unique word that gives: 0 mismatches."""
    mine_module, their_module = ours("tokenization"), original("tokenization")
    texts = corpus["chunks"]
    reference = dict(zip(texts, map(their_module.BasicTokenizer(do_lower_case=do_lower_case).tokenize, texts)))
    bad_basic = _mismatches(texts, mine_module.BasicTokenizer(do_lower_case=do_lower_case).tokenize, reference.get)
    words = sorted({word for tokens in reference.values() for word in tokens})
    mine_wp = mine_module.WordpieceTokenizer(vocab=mine_module.load_vocab(vocab_file))
    theirs_wp = their_module.WordpieceTokenizer(vocab=their_module.load_vocab(vocab_file))
    bad_wordpiece = _mismatches(words, mine_wp.tokenize, theirs_wp.tokenize)
    print(f"do_lower_case={do_lower_case}: {len(texts)} chunks, {bad_basic} basic mismatches; "
          f"{len(words)} words, {bad_wordpiece} wordpiece mismatches")
    assert bad_basic == 0 and bad_wordpiece == 0


@pytest.mark.slow
@pytest.mark.parametrize("do_lower_case", [True, False], ids=["uncased", "cased"])
def test_bert_tokenizer_matches_original_on_whole_lines(corpus, vocab_file, do_lower_case):
    """BertTokenizer on every unique whole text (SQuAD contexts included): token ids, 0 mismatches."""
    mine = ours("tokenization").BertTokenizer(vocab_file, do_lower_case=do_lower_case, max_len=10**12)
    theirs = original("tokenization").BertTokenizer(vocab_file, do_lower_case=do_lower_case, max_len=10**12)
    texts = corpus["lines"]
    bad = _mismatches(texts, lambda t: mine.convert_tokens_to_ids(mine.tokenize(t)),
                      lambda t: theirs.convert_tokens_to_ids(theirs.tokenize(t)))
    print(f"do_lower_case={do_lower_case}: {len(texts)} texts, {bad} mismatches")
    assert len(texts) > 100_000 and bad == 0
