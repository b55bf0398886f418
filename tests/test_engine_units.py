"""Engine pieces on their own: sampler, settings, launcher arguments, loss scaling, checkpoint files."""

from __future__ import annotations

import pytest
import torch

from bert.engine import DistContext, TrainConfig, setup_distributed, strip_launcher_args
from bert.engine import checkpoint as ckpt
from bert.engine.precision import LossScaleCollapse, Precision
from bert.engine.sampler import DistributedLengthGroupedSampler, eval_shard, global_batches

# ---------------------------------------------------------------------------------------------
# Sampler


def _lengths(n, seed=0):
    return torch.randint(5, 120, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_global_batches_cover_every_index_once_and_depend_only_on_seed_and_epoch():
    lengths = _lengths(1000)
    a = global_batches(1000, 32, seed=3, epoch=1, lengths=lengths)
    assert a == global_batches(1000, 32, seed=3, epoch=1, lengths=lengths)
    assert a != global_batches(1000, 32, seed=3, epoch=2, lengths=lengths)
    assert sorted(i for b in a for i in b) == list(range(1000))
    assert [len(b) for b in a] == [32] * 31 + [8]  # ceil(1000/32) batches, the short one last


def test_length_grouping_cuts_padding_and_still_shuffles():
    lengths = _lengths(3200)

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    grouped = global_batches(3200, 32, seed=0, epoch=0, lengths=lengths)
    plain = global_batches(3200, 32, seed=0, epoch=0)
    print(f"padded tokens: grouped {padded(grouped)}, shuffled {padded(plain)}, real {sum(lengths)}")
    assert padded(grouped) < 0.7 * padded(plain)
    longest = [max(lengths[i] for i in b) for b in grouped]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


@pytest.mark.parametrize("n", [160, 37, 3])
def test_every_world_size_and_accumulation_shares_out_the_same_global_batches(n):
    lengths = _lengths(n)
    reference = global_batches(n, 16, seed=5, epoch=2, lengths=lengths)
    for world in (1, 2, 4):
        for accum in (1, 2, 4):
            plans = []
            for rank in range(world):
                s = DistributedLengthGroupedSampler(n, 16, accum, world, rank, seed=5, lengths=lengths)
                s.set_epoch(2)
                plans.append(s.plan())
                assert len(s) == len(plans[-1]) * accum == len(list(s))
            for step, batch in enumerate(reference):
                got = [i for p in plans for mb in p[step].micro_batches for i in mb.indices[:mb.num_real]]
                assert got == batch  # in order: rank-major, then micro-batch
                assert all(p[step].global_count == len(batch) for p in plans)
                # Stand-ins only where a short batch leaves a shard empty; never an empty micro-batch.
                assert all(mb.indices for p in plans for mb in p[step].micro_batches)


def test_resume_position_skips_the_consumed_steps():
    s = DistributedLengthGroupedSampler(100, 8, 2, 2, 1, seed=1, lengths=_lengths(100))
    s.set_epoch(4)
    full = s.plan()
    s.set_start_step(5)
    assert s.plan() == full[5:] and len(s) == (13 - 5) * 2
    s.set_epoch(5)
    assert s.start_step == 0
    with pytest.raises(ValueError, match="start step 14"):
        s.set_start_step(14)


def test_eval_shards_hold_every_example_exactly_once():
    for n, world in [(37, 2), (5, 8), (100, 3)]:
        lengths = _lengths(n)
        shards = [eval_shard(n, world, r, lengths) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


# ---------------------------------------------------------------------------------------------
# Settings and launcher


def test_per_device_batch_is_derived_and_must_divide():
    cfg = TrainConfig(global_batch_size=32, grad_accum_steps=4)
    assert cfg.per_device_batch_size(1) == 8 and cfg.per_device_batch_size(2) == 4
    with pytest.raises(ValueError, match=r"global_batch_size 32 .* grad_accum_steps 4 x world size 3"):
        cfg.per_device_batch_size(3)


def test_total_steps_round_up():
    assert TrainConfig(epochs=3, global_batch_size=32).steps(100) == (4, 12)
    assert TrainConfig(epochs=2.5, global_batch_size=32).steps(100) == (4, 10)
    assert TrainConfig(epochs=0.3, global_batch_size=32).steps(100) == (4, 2)
    assert TrainConfig(epochs=3, global_batch_size=32).steps(96) == (3, 9)


@pytest.mark.parametrize("bad, key", [
    ({"precision": "fp8"}, "precision"), ({"global_batch_size": 0}, "global_batch_size"),
    ({"optimizer": "sgd"}, "optimizer"), ({"warmup_proportion": 1.0}, "warmup_proportion"),
    ({"epochs": float("nan")}, "epochs"), ({"resume": "yes"}, "resume"),
])
def test_bad_settings_name_the_field(bad, key):
    with pytest.raises(ValueError, match=f"TrainConfig.{key}"):
        TrainConfig(**bad)
    with pytest.raises(ValueError, match="TrainConfig.loss_scale: 128 is for precision fp16 only, not bf16"):
        TrainConfig(precision="bf16", loss_scale=128)


def test_old_launcher_arguments_are_stripped():
    assert strip_launcher_args(["--local-rank=1", "--x", "y"]) == (["--x", "y"], 1)
    assert strip_launcher_args(["a", "--local_rank", "3"]) == (["a"], 3)
    assert strip_launcher_args(["--local_rank=0"]) == ([], 0)
    assert strip_launcher_args(["--lr", "2"]) == (["--lr", "2"], None)
    with pytest.raises(ValueError, match="--local-rank needs a value"):
        strip_launcher_args(["--local-rank"])
    with pytest.raises(ValueError, match="must be an integer, got 'x'"):
        strip_launcher_args(["--local_rank=x"])


def test_one_process_needs_no_process_group(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = setup_distributed(device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    ctx.barrier()  # no-op
    t = torch.tensor([2.0])
    assert ctx.all_reduce_sum(t) is t and ctx.all_gather(t) == [t]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2 is outside WORLD_SIZE=2"):
        setup_distributed(device="cpu")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR is not set"):
        setup_distributed(device="cpu")


# ---------------------------------------------------------------------------------------------
# Loss scaling


def _one_param_step(policy: Precision, grad: float) -> tuple[bool, float]:
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.1)
    policy.backward((p * grad).sum())
    policy.unscale_(opt)
    finite = bool(torch.isfinite(p.grad).all())
    if finite:
        assert torch.allclose(p.grad, torch.full((3,), grad))  # unscaled before anyone reads it
    taken = policy.step(opt, finite)
    return taken, p.detach()[0].item()


def test_dynamic_scale_skips_overflow_halves_and_aborts_below_the_floor():
    policy = Precision("fp16", torch.device("cpu"), min_loss_scale=10000)
    assert policy.loss_scale == 2 ** 16
    assert _one_param_step(policy, 2.0) == (True, pytest.approx(0.8))
    taken, value = _one_param_step(policy, float("inf"))
    assert (taken, value, policy.loss_scale, policy.skipped_steps) == (False, 1.0, 2 ** 15, 1)
    _one_param_step(policy, float("nan"))
    with pytest.raises(LossScaleCollapse, match="collapsed to 8192 .floor 10000. after 3 overflowing steps in a row"):
        _one_param_step(policy, float("inf"))


def test_static_scale_never_moves_and_aborts_when_it_keeps_overflowing():
    policy = Precision("fp16", torch.device("cpu"), loss_scale=128.0, max_consecutive_skips=3)
    assert _one_param_step(policy, 1.0) == (True, pytest.approx(0.9))
    assert _one_param_step(policy, float("inf"))[0] is False
    assert policy.loss_scale == 128.0 and policy.skipped_steps == 1
    assert _one_param_step(policy, 1.0)[0] is True and policy.consecutive_skips == 0
    state = policy.state_dict()
    restored = Precision("fp16", torch.device("cpu"), loss_scale=128.0, max_consecutive_skips=3)
    restored.load_state_dict(state)
    assert restored.skipped_steps == 1 and restored.loss_scale == 128.0
    _one_param_step(policy, float("inf"))
    _one_param_step(policy, float("inf"))
    with pytest.raises(LossScaleCollapse, match="3 steps in a row at the static loss scale 128"):
        _one_param_step(policy, float("inf"))


def test_bf16_and_fp32_need_no_scaler():
    for name in ("fp32", "bf16"):
        policy = Precision(name, torch.device("cpu"))
        assert policy.scaler is None and policy.loss_scale == 1.0
    with torch.no_grad(), Precision("bf16", torch.device("cpu")).autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------
# Checkpoint files


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    import random

    import numpy as np

    random.gauss(0, 1)  # leaves a cached gauss value to restore
    state = ckpt.get_rng_state()
    expected = (random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(2).tolist())
    ckpt.save_checkpoint(tmp_path, {"global_step": 3, "epoch": 0, "step_in_epoch": 3, "model": {},
                                    "optimizer": {}, "rng": [state]})
    loaded = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    ckpt.set_rng_state(loaded["rng"][0])
    assert (random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(2).tolist()) == expected


class _Payload:
    """Unpickling this creates a file: the test's evidence of code run at load time."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"format": 1, "global_step": 1, "x": _Payload(marker)}, folder / "step-00000001.pt")
    assert not marker.exists()
    with pytest.raises(ValueError, match="step-00000001.pt: not a readable training checkpoint"):
        ckpt.load_checkpoint(folder / "step-00000001.pt")
    assert not marker.exists()
    (folder / "step-00000002.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="step-00000002.pt"):
        ckpt.load_checkpoint(folder / "step-00000002.pt")


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    for step in (4, 8, 12):
        ckpt.save_checkpoint(tmp_path, {"global_step": step}, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [8, 12]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_dist_context_defaults_to_one_cpu_process():
    ctx = DistContext()
    assert ctx.world_size == 1 and ctx.device.type == "cpu" and ctx.is_main


@pytest.mark.parametrize("name", ["bertadam", "adamw", "lamb"])
def test_optimizers_skip_decay_on_bias_and_layer_norm_and_share_the_schedule(name):
    from bert.engine.optim import build_optimizer
    from test_engine_helpers import tiny_model

    model = tiny_model()
    bundle = build_optimizer(model, TrainConfig(optimizer=name, weight_decay=0.01, learning_rate=1.0,
                                                warmup_proportion=0.1), total_steps=100)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = 0
    for group in bundle.optimizer.param_groups:
        for p in group["params"]:
            no_decay = names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)]
            assert group["weight_decay"] == (0.0 if no_decay else 0.01), names[id(p)]
            seen += 1
    assert seen == len(names)
    # warmup_linear over 100 steps with 10% warmup: 0 at the start, 1 at step 10, 0.5 at step 55.
    assert [bundle.learning_rate(1.0, s) for s in (0, 5, 10, 55)] == pytest.approx([0, 0.5, 1, 0.5])
    assert (bundle.scheduler is None) == (name == "bertadam")
    assert bundle.clip_global_norm == (0.0 if name == "bertadam" else 1.0)
