"""LAMB against a hand-written float64 reference of You et al. (2020), Algorithm 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bert.optim.lamb import Lamb


def reference_lamb(w0, grad_fn, steps, lr, beta1, beta2, eps, decay, adapt, bias_correction=True):
    """The paper's update written out in numpy float64, one tensor; grad_fn(t, w) gives the gradient."""
    w = np.array(w0, dtype=np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    trajectory = []
    for t in range(1, steps + 1):
        g = grad_fn(t, w)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t) if bias_correction else m
        v_hat = v / (1 - beta2**t) if bias_correction else v
        u = m_hat / (np.sqrt(v_hat) + eps) + decay * w
        ratio = 1.0
        if adapt:
            w_norm, u_norm = np.sqrt(np.sum(w * w)), np.sqrt(np.sum(u * u))
            if w_norm > 0 and u_norm > 0:
                ratio = w_norm / u_norm
        w = w - lr * ratio * u
        trajectory.append(w.copy())
    return trajectory


def run_lamb(groups_init, grad_fns, steps, **kwargs):
    """Lamb in float64 over tensors given as (array, group options); returns each tensor's trajectory."""
    tensors = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w, _ in groups_init]
    opt = Lamb([{"params": [t], **opts} for t, (_, opts) in zip(tensors, groups_init)], **kwargs)
    out = [[] for _ in tensors]
    for t in range(1, steps + 1):
        for k, (tensor, fn) in enumerate(zip(tensors, grad_fns)):
            tensor.grad = torch.from_numpy(fn(t, tensor.detach().numpy().copy()))
        opt.step()
        for k, tensor in enumerate(tensors):
            out[k].append(tensor.detach().numpy().copy())
    return out, opt


def quadratic_grad(seed, shape):
    """Gradient of 0.5 * ||A w - b||^2 (depends on w, so errors in the trajectory compound)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    a = rng.normal(size=(n, n))
    b = rng.normal(size=n)
    return lambda t, w: (a.T @ (a @ w.reshape(-1) - b)).reshape(shape)


def noise_grad(seed, shape):
    rng = np.random.default_rng(seed)
    grads = [rng.normal(scale=10.0 ** rng.uniform(-3, 1), size=shape) for _ in range(50)]
    return lambda t, w: grads[t - 1]


@pytest.mark.parametrize("bias_correction", [True, False])
def test_matches_float64_reference_with_and_without_decay(bias_correction):
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(6, 5)), rng.normal(size=5)
    fns = [quadratic_grad(1, weight.shape), noise_grad(2, bias.shape)]
    hyper = dict(lr=0.02, betas=(0.9, 0.999), eps=1e-6, bias_correction=bias_correction)
    # Decayed tensor (adapted) and a bias-like group with no decay (not adapted, as TFA / FusedLAMB).
    got, _ = run_lamb([(weight, {"weight_decay": 0.01}), (bias, {"weight_decay": 0.0})], fns, 20, **hyper)
    common = dict(lr=0.02, beta1=0.9, beta2=0.999, eps=1e-6, bias_correction=bias_correction)
    want_w = reference_lamb(weight, fns[0], 20, decay=0.01, adapt=True, **common)
    want_b = reference_lamb(bias, fns[1], 20, decay=0.0, adapt=False, **common)
    for step in range(20):
        np.testing.assert_allclose(got[0][step], want_w[step], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(got[1][step], want_b[step], rtol=1e-12, atol=1e-13)
    # The trust ratio matters here: plain Adam (ratio 1) gives a different trajectory.
    adam_like = reference_lamb(weight, fns[0], 20, decay=0.01, adapt=False, **common)
    assert np.abs(adam_like[-1] - want_w[-1]).max() > 1e-3


def test_always_adapt_applies_the_trust_ratio_without_decay():
    bias = np.random.default_rng(3).normal(size=7)
    fn = noise_grad(4, bias.shape)
    got, _ = run_lamb([(bias, {"weight_decay": 0.0})], [fn], 10, lr=0.05, always_adapt=True)
    want = reference_lamb(bias, fn, 10, lr=0.05, beta1=0.9, beta2=0.999, eps=1e-6, decay=0.0, adapt=True)
    np.testing.assert_allclose(got[0][-1], want[-1], rtol=1e-12, atol=1e-13)
    not_adapted = reference_lamb(bias, fn, 10, lr=0.05, beta1=0.9, beta2=0.999, eps=1e-6, decay=0.0, adapt=False)
    assert np.abs(not_adapted[-1] - want[-1]).max() > 1e-3


def test_zero_weights_take_the_plain_step():
    # ||w|| = 0 at the first step: ratio 1 (a zero-initialised tensor must still move).
    fn = noise_grad(5, (4,))
    got, _ = run_lamb([(np.zeros(4), {"weight_decay": 0.01})], [fn], 3, lr=0.1)
    want = reference_lamb(np.zeros(4), fn, 3, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-6, decay=0.01, adapt=True)
    assert np.abs(got[0][0]).min() > 0
    np.testing.assert_allclose(got[0][-1], want[-1], rtol=1e-12, atol=1e-13)


def test_layer_step_size_is_lr_times_weight_norm():
    # The point of LAMB: each adapted tensor moves by exactly lr * ||w|| per step, whatever the
    # gradient's scale.
    w0 = np.random.default_rng(6).normal(size=(3, 3))
    for scale in (1e-4, 1.0, 1e4):
        fn = lambda t, w, s=scale: s * np.full((3, 3), 1.0) * np.arange(9).reshape(3, 3)
        got, _ = run_lamb([(w0, {"weight_decay": 0.01})], [fn], 1, lr=0.01)
        assert np.linalg.norm(got[0][0] - w0) == pytest.approx(0.01 * np.linalg.norm(w0), rel=1e-12)


def test_state_dict_round_trip_resumes_exactly():
    w0 = np.random.default_rng(7).normal(size=(5,))
    fn = quadratic_grad(8, (5,))
    full, _ = run_lamb([(w0, {"weight_decay": 0.01})], [fn], 8, lr=0.01)

    first, opt = run_lamb([(w0, {"weight_decay": 0.01})], [fn], 4, lr=0.01)
    state = opt.state_dict()
    tensor = torch.tensor(first[0][-1], dtype=torch.float64, requires_grad=True)
    resumed = Lamb([{"params": [tensor], "weight_decay": 0.01}], lr=0.01)
    resumed.load_state_dict(state)
    for t in range(5, 9):
        tensor.grad = torch.from_numpy(fn(t, tensor.detach().numpy().copy()))
        resumed.step()
    np.testing.assert_array_equal(tensor.detach().numpy(), full[0][-1])


def test_fits_a_small_regression_in_float32():
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    true_w = torch.randn(8, 1)
    y = x @ true_w
    layer = torch.nn.Linear(8, 1)
    opt = Lamb([{"params": [layer.weight], "weight_decay": 0.0},
                {"params": [layer.bias], "weight_decay": 0.0}], lr=0.05, always_adapt=False)
    start = torch.nn.functional.mse_loss(layer(x), y).item()
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(layer(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3 * start


@pytest.mark.parametrize("kwargs, word", [({"lr": 0.0}, "lr"), ({"betas": (1.0, 0.9)}, "betas"),
                                          ({"eps": -1.0}, "eps"), ({"weight_decay": -0.1}, "weight_decay")])
def test_bad_hyper_parameters_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        Lamb([torch.zeros(2, requires_grad=True)], **kwargs)


def test_engine_builds_lamb_with_no_decay_groups(tiny_config):
    """optimizer: lamb in the engine: bert.optim.lamb.Lamb, decay groups, LambdaLR schedule, global clipping."""
    from bert.engine.config import TrainConfig
    from bert.engine.optim import build_optimizer
    from bert.modeling import BertForPreTraining

    model = BertForPreTraining(tiny_config)
    bundle = build_optimizer(model, TrainConfig(optimizer="lamb", weight_decay=0.01, max_grad_norm=1.0), 10)
    assert isinstance(bundle.optimizer, Lamb)
    assert bundle.scheduler is not None and bundle.clip_global_norm == 1.0
    names = {id(p): n for n, p in model.named_parameters()}
    for group in bundle.optimizer.param_groups:
        for p in group["params"]:
            no_decay = names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)]
            assert group["weight_decay"] == (0.0 if no_decay else 0.01), names[id(p)]
