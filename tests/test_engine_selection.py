"""Evaluation during training in the engine (bert/engine/selection.py, the loop's evaluator calls): which
step wins, when patience stops a run, and that evaluating changes no weight of the trajectory."""

from __future__ import annotations

import math

import pytest
import torch

from bert.engine import TrainConfig, fit
from bert.engine.selection import Selection
from bert.io.settings import SettingError
from test_engine_helpers import ToyDataset, collate, tiny_model


def test_selection_on_a_scripted_sequence():
    """Ties and NaN are no improvement; patience counts evaluations in a row since the best."""
    sel = Selection(patience=2)
    script = [(1, 50.0, True), (2, 60.0, True), (3, 60.0, False), (4, 70.0, True), (5, math.nan, False)]
    for step, value, improves in script:
        assert sel.update(step, value) is improves, step
        assert not sel.stop, step
    assert sel.update(6, 70.0) is False and sel.stop  # the second evaluation in a row without improvement
    assert (sel.best_step, sel.best_value, sel.evaluations, sel.since_best) == (4, 70.0, 6, 2)
    never = Selection(patience=0)
    for step in range(1, 20):
        never.update(step, -step)
    assert not never.stop and never.best_step == 1
    again = Selection()
    again.load_state_dict(sel.state_dict())
    assert again == sel


class Scripted:
    """An evaluator returning a fixed sequence of figures, keeping a copy of the weights it was shown."""

    primary = "dev_score"

    def __init__(self, values):
        self.values, self.seen = list(values), []

    def __call__(self, model):
        torch.rand(3)  # draws from the global RNG, as predict's DataLoader does: the loop must fork it
        self.seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"dev_score": self.values[len(self.seen) - 1], "dev_other": -1.0}


def _fit(tmp_path, evaluator=None, **cfg):
    model, data = tiny_model(0.1), ToyDataset(64, seed=5)
    config = TrainConfig(epochs=3.0, learning_rate=1e-3, global_batch_size=16, log_every=5, **cfg)  # 12 steps
    result = fit(model, data, collate, config, tmp_path, lengths=data.lengths, progress=False, evaluator=evaluator)
    return model, result


def test_patience_stops_at_the_scripted_step_and_best_keeps_that_steps_weights(tmp_path):
    scripted = Scripted([10.0, 30.0, 20.0, 30.0, 25.0, 99.0])  # evaluations at steps 2, 4, 6, 8, 10
    model, result = _fit(tmp_path, scripted, eval_every=2, select="best", patience=3)
    assert result.global_steps == 10  # 6, 8 and 10 bring nothing past step 4's 30.0
    assert len(scripted.seen) == 5
    assert result.selection == {"metric": "dev_score", "select": "best", "selected_step": 4, "best_step": 4,
                                "best_value": 30.0, "evaluations": 5, "patience": 3, "stopped_early": True}
    best = scripted.seen[1]  # the weights the evaluator saw at step 4
    assert all(torch.equal(model.state_dict()[k], best[k]) for k in best)
    # a history point at every evaluation (log_every 5 would give 5 and 10 only), the figures in it
    dev = [(p["step"], p["dev_score"]) for p in result.history if "dev_score" in p]
    assert dev == [(2, 10.0), (4, 30.0), (6, 20.0), (8, 30.0), (10, 25.0)]
    assert [p["step"] for p in result.history] == [2, 4, 5, 6, 8, 10] and all("loss" in p for p in result.history)


def test_evaluating_changes_no_weight_and_the_last_step_is_evaluated(tmp_path):
    plain, _ = _fit(tmp_path / "plain")
    scripted = Scripted([1.0, 2.0, 3.0])
    watched, result = _fit(tmp_path / "watched", scripted, eval_every=5)  # steps 5, 10 and the last, 12
    assert [p["step"] for p in result.history if "dev_score" in p] == [5, 10, 12]
    assert result.selection["selected_step"] == 12 and not result.selection["stopped_early"]
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in watched.state_dict().items())


def test_the_best_so_far_survives_a_resume(tmp_path):
    """Interrupted after step 8's checkpoint, the run resumes with step 4 as its best (weights included)."""
    values = [10.0, 30.0, 20.0, 25.0, 5.0, 6.0]

    class Interrupt(Exception):
        pass

    class Stops(Scripted):
        def __call__(self, model):
            if len(self.seen) == 4:  # the evaluation of step 10: after step 8's checkpoint
                raise Interrupt
            return super().__call__(model)

    with pytest.raises(Interrupt):
        _fit(tmp_path / "run", Stops(values), eval_every=2, select="best", checkpoint_every=4)
    resumed = Scripted(values[4:])
    model, result = _fit(tmp_path / "run", resumed, eval_every=2, select="best", checkpoint_every=4)
    reference = Scripted(values)
    ref_model, ref_result = _fit(tmp_path / "ref", reference, eval_every=2, select="best")
    assert result.selection == ref_result.selection and result.selection["selected_step"] == 4
    assert all(torch.equal(ref_model.state_dict()[k], v) for k, v in model.state_dict().items())
    assert [p.get("dev_score") for p in result.history] == [p.get("dev_score") for p in ref_result.history]


@pytest.mark.parametrize("change, key", [({"select": "foo"}, "select"), ({"patience": -1}, "patience"),
                                         ({"eval_every": -2}, "eval_every"), ({"patience": 2}, "patience"),
                                         ({"select": "best"}, "select")])
def test_bad_evaluation_settings_name_their_key(change, key):
    with pytest.raises(SettingError) as err:
        TrainConfig(**change)
    assert err.value.name == key and str(err.value).startswith(f"TrainConfig.{key}: ")


def test_eval_every_without_an_evaluator_is_refused(tmp_path):
    with pytest.raises(ValueError, match="eval_every is 2 but fit got no evaluator"):
        _fit(tmp_path, eval_every=2)
