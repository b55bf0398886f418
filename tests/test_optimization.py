"""BertAdam against a hand-written float64 reference, schedule values, LambdaLR use and resuming."""

from __future__ import annotations

import io
import logging
import math
import pickle

import numpy as np
import pytest
import torch

from bert.optimization import BertAdam, get_schedule_fn, param_groups_no_decay, schedule_multiplier

STEPS, T_TOTAL, WARMUP, LR = 20, 20, 0.2, 0.1
SHAPES = [(4, 3), (5,), (2, 2, 2)]
DECAY = [0.01, 0.0, 0.01]  # two groups: with and without weight decay


def gradients(seed: int = 0) -> list[list[np.ndarray | None]]:
    """A fixed gradient sequence per step and parameter; parameter 2 has none at steps 3 and 7."""
    rng = np.random.default_rng(seed)
    out = []
    for step in range(STEPS):
        # scales 0.1 to 3: some gradients get clipped (norm > 1), some do not
        grads = [rng.normal(size=s) * rng.choice([0.1, 3.0]) for s in SHAPES]
        if step in (3, 7):
            grads[2] = None
        out.append(grads)
    return out


def reference(params: list[np.ndarray], grads, schedule: str, max_grad_norm: float = 1.0):
    """The formulas of the issue, written out in float64 numpy, one parameter at a time."""
    params = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    taken = [0] * len(params)  # each parameter's own step count
    b1, b2, e = 0.9, 0.999, 1e-6
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            if g is None:
                continue
            norm = math.sqrt(float((g * g).sum()))
            if max_grad_norm > 0 and max_grad_norm / (norm + 1e-6) < 1:
                g = g * (max_grad_norm / (norm + 1e-6))
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            update = m[i] / (np.sqrt(v[i]) + e) + DECAY[i] * params[i]
            x = taken[i] / T_TOTAL
            if x < WARMUP:
                mult = x / WARMUP
            elif schedule == "warmup_linear":
                mult = max((x - 1) / (WARMUP - 1), 0.0)
            elif schedule == "warmup_cosine":
                mult = 0.5 * (1 + math.cos(math.pi * (x - WARMUP) / (1 - WARMUP)))
            else:
                mult = 1.0
            params[i] = params[i] - LR * mult * update
            taken[i] += 1
    return params


def make_params(dtype=torch.float64) -> list[torch.nn.Parameter]:
    rng = np.random.default_rng(1)
    return [torch.nn.Parameter(torch.tensor(rng.normal(size=s), dtype=dtype)) for s in SHAPES]


# the three update paths: the original per-parameter loop, torch._foreach_* ops, torch's fused AdamW kernel
MODES = {"loop": dict(foreach=False), "foreach": dict(foreach=True, fused=False), "fused": dict(fused=True)}


def make_optimizer(params, schedule="warmup_linear", mode="foreach", **kwargs) -> BertAdam:
    groups = [{"params": [p], "weight_decay": d} for p, d in zip(params, DECAY)]
    return BertAdam(groups, lr=LR, warmup=WARMUP, t_total=T_TOTAL, schedule=schedule, **MODES[mode], **kwargs)


def run(params, optimizer, grads) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else torch.tensor(g, dtype=p.dtype)
        optimizer.step()


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("schedule", ["warmup_linear", "warmup_cosine", "warmup_constant"])
def test_matches_float64_reference(schedule, mode):
    params = make_params()
    start = [p.detach().numpy().copy() for p in params]
    optimizer = make_optimizer(params, schedule, mode)
    grads = gradients()
    # with warmup the first update has learning rate 0: nothing moves, decay included
    run(params, optimizer, grads[:1])
    assert all(np.array_equal(p.detach().numpy(), s) for p, s in zip(params, start))
    run(params, optimizer, grads[1:])
    expected = reference(start, grads, schedule)
    diff = max(float(np.abs(p.detach().numpy() - x).max()) for p, x in zip(params, expected))
    print(f"{schedule} {mode}: max |BertAdam - reference| = {diff:.2e}")
    assert diff < 1e-7
    assert [optimizer.state[p]["step"] for p in params] == [20, 20, 18]
    assert np.abs(expected[0] - start[0]).max() > 1e-2  # it did train


@pytest.mark.parametrize("mode", list(MODES))
def test_float32_and_no_clipping_match_reference(mode):
    params = make_params(torch.float32)
    start = [p.detach().double().numpy() for p in params]
    run(params, make_optimizer(params, mode=mode, max_grad_norm=0.0), gradients(seed=2))
    expected = reference(start, gradients(seed=2), "warmup_linear", max_grad_norm=0.0)
    assert max(float(np.abs(p.detach().double().numpy() - x).max()) for p, x in zip(params, expected)) < 1e-6


def test_gradients_are_clipped_in_place_per_parameter():
    p, q = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    p.grad, q.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])
    BertAdam([p, q], lr=0.1).step()
    assert torch.allclose(p.grad, torch.tensor([0.6, 0.8, 0.0]), atol=1e-6)  # norm 5 -> 1
    assert torch.equal(q.grad, torch.tensor([0.3, 0.4]))  # norm 0.5: untouched


def test_schedule_values():
    linear, cosine = get_schedule_fn("warmup_linear", 0.1, 100), get_schedule_fn("warmup_cosine", 0.1, 100)
    constant, none = get_schedule_fn("warmup_constant", 0.1, 100), get_schedule_fn("none", 0.1, 100)
    # step 0, mid-warmup, end of warmup, half-way after warmup, t_total, beyond
    assert [linear(s) for s in (0, 5, 10, 55, 100, 150)] == pytest.approx([0, 0.5, 1, 0.5, 0, 0], abs=1e-12)
    assert [cosine(s) for s in (0, 5, 10, 55, 100)] == pytest.approx([0, 0.5, 1, 0.5, 0], abs=1e-12)
    assert cosine(150) == pytest.approx(0.5 * (1 + math.cos(math.pi * 1.4 / 0.9)))  # rises again, as the original
    assert [constant(s) for s in (0, 5, 10, 100, 150)] == [0, 0.5, 1, 1, 1]
    assert [none(s) for s in (0, 5, 100, 150)] == [1, 1, 1, 1]
    assert get_schedule_fn("warmup_linear", -1, 100)(0) == 1.0  # no warmup: starts at full rate
    assert get_schedule_fn("warmup_linear", 0.1, -1)(5) == 1.0  # no t_total: no schedule
    assert schedule_multiplier("warmup_linear", 0.55, 0.1) == pytest.approx(0.5)
    assert get_schedule_fn(None, 0.1, 10).name == "none"


def test_schedule_validation():
    with pytest.raises(ValueError, match="unknown schedule 'warmup_exp'"):
        get_schedule_fn("warmup_exp", 0.1, 10)
    with pytest.raises(ValueError, match="Invalid warmup: 1.0"):
        get_schedule_fn("warmup_linear", 1.0, 10)
    with pytest.raises(ValueError, match="t_total=0"):
        get_schedule_fn("warmup_linear", 0.1, 0)
    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="Invalid learning rate"):
        BertAdam(p, lr=-1)
    with pytest.raises(ValueError, match="Invalid b2"):
        BertAdam(p, lr=1, b2=1.0)
    with pytest.raises(ValueError, match="Invalid schedule parameter: 'cosine'"):
        BertAdam(p, lr=1, schedule="cosine")
    s = torch.nn.Parameter(torch.zeros(3))
    s.grad = torch.zeros(3).to_sparse()
    with pytest.raises(ValueError, match="sparse gradients"):
        BertAdam([s], lr=1).step()


def test_lambda_lr_gives_torch_optimizers_the_same_learning_rates():
    fn = get_schedule_fn("warmup_linear", 0.2, 10)
    params = [torch.nn.Parameter(torch.zeros(2))]
    adamw = torch.optim.AdamW(params, lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(adamw, fn)
    bert = BertAdam([torch.nn.Parameter(torch.zeros(2))], lr=0.5, warmup=0.2, t_total=10)
    for _ in range(12):
        bert.param_groups[0]["params"][0].grad = torch.ones(2)
        bert.step()
        adamw.step()
        scheduler.step()
        # the rate for the next update: LambdaLR's current lr == BertAdam's get_lr()
        assert adamw.param_groups[0]["lr"] == pytest.approx(bert.get_lr()[0], abs=1e-15)
    assert pickle.loads(pickle.dumps(fn)) == fn
    restored = torch.optim.lr_scheduler.LambdaLR(torch.optim.AdamW(params, lr=0.5), fn)
    restored.load_state_dict(scheduler.state_dict())
    assert restored.get_last_lr() == scheduler.get_last_lr()


@pytest.mark.parametrize("mode", list(MODES))
def test_resume_from_state_dict_equals_uninterrupted_run(mode):
    grads = gradients(seed=3)
    straight = make_params(torch.float32)
    run(straight, make_optimizer(straight, mode=mode), grads)

    first = make_params(torch.float32)
    optimizer = make_optimizer(first, mode=mode)
    run(first, optimizer, grads[:9])
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in first], "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # plain data: no pickled code needed

    resumed = [torch.nn.Parameter(t.clone()) for t in saved["params"]]
    optimizer = make_optimizer(resumed, mode=mode)
    optimizer.load_state_dict(saved["optimizer"])
    run(resumed, optimizer, grads[9:])
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))


def test_foreach_and_loop_agree_bitwise_in_float32():
    results = []
    for mode in ("foreach", "loop"):
        params = make_params(torch.float32)
        run(params, make_optimizer(params, mode=mode), gradients(seed=4))
        results.append([p.detach() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_fused_is_the_default_and_agrees_with_the_loop_to_rounding_in_float32():
    assert BertAdam([torch.nn.Parameter(torch.zeros(1))], lr=0.1).fused
    results = []
    for mode in ("fused", "loop"):
        params = make_params(torch.float32)
        run(params, make_optimizer(params, mode=mode), gradients(seed=4))
        results.append([p.detach() for p in params])
    diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(*results))
    assert diff < 1e-6, diff  # float32 rounding of p*(1-lr*wd) - lr*u against p - lr*(u + wd*p)


def test_warns_at_each_step_past_t_total_as_the_original(caplog):
    """The original's schedules warn each time training goes further beyond t_total: once a step, whatever the
    number of parameters (steps 4 to 7 here, after t_total=3)."""
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    optimizer = BertAdam(params, lr=0.1, warmup=0.1, t_total=3)
    with caplog.at_level(logging.WARNING, logger="bert.optimization"):
        for _ in range(8):
            for p in params:
                p.grad = torch.ones_like(p)
            optimizer.step()
    assert [r.getMessage() for r in caplog.records if "beyond" in r.getMessage()] == [
        "Training beyond specified 't_total'. Learning rate multiplier set to 0.0. "
        "Please set 't_total' of WarmupLinearSchedule correctly."
    ] * 4


def test_param_groups_no_decay():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = torch.nn.Linear(3, 3)
            self.LayerNorm = torch.nn.LayerNorm(3)
            self.embeddings = torch.nn.Embedding(5, 3)

    model = torch.nn.Sequential(Block(), torch.nn.Linear(3, 2))
    decay, no_decay = param_groups_no_decay(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == ["0.dense.weight", "0.embeddings.weight", "1.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == [
        "0.LayerNorm.bias", "0.LayerNorm.weight", "0.dense.bias", "1.bias",
    ]  # fmt: skip
    groups = param_groups_no_decay(torch.nn.Linear(2, 2, bias=False), 0.1)  # empty groups are left out
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.1 and len(groups[0]["params"]) == 1
