"""The trials' models, ready to ship: each trial's MLflow Model (a pyfunc around our tokenizer and model), the
report's choice registered as the champion, `mlflow models serve` answering as `bert predict` does, and the
model's bytes stored once. The pipeline tests share test_tracking's three `make run`s (the `repros` fixture,
conftest.py); the others check the pieces alone.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from test_tracking import all_runs, children, free_port, mlflow_client, parents_in_order, tool_env

VENV_BIN = Path(sys.executable).parent
MODEL = "bert-demo-pair"


def dev_pairs(project: Path) -> list[tuple[str, str]]:
    with open(project / "data/raw/demo-pair/dev.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(r["#1 String"], r["#2 String"]) for r in rows]


def champion(client):
    return client.get_model_version_by_alias(MODEL, "champion")


def model_id_of(version) -> str:
    """The MLflow Model a registered version is (its source is models:/<model id>)."""
    assert version.source.startswith("models:/m-"), version.source
    return version.source.removeprefix("models:/")


# ---------------------------------------------------------------------------------------------
# After three `make run`s


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
def test_each_pipeline_runs_choice_became_the_champion(repros):
    client = mlflow_client(repros.project)
    parents = parents_in_order(client)
    runs = all_runs(client)
    versions = sorted(client.search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))
    # one version per pipeline run (each logged its trial's model), the alias on the last run's choice
    chosen = [next(iter(children(runs, parent).values())) for parent in parents]
    assert [v.run_id for v in versions] == [t.info.run_id for t in chosen]
    assert [v.source for v in versions] == [f"models:/{t.outputs.model_outputs[-1].model_id}" for t in chosen]
    best = champion(client)
    assert best.version == versions[-1].version
    metrics = json.loads((repros.project / "reports/metrics.json").read_text())["demo-pair"]["chosen"]
    assert (best.tags["seed"], best.tags["metric"], best.tags["rule"]) == \
        (str(metrics["seed"]), "f1", metrics["rule"])
    assert best.tags["pipeline_run"] == parents[-1].info.run_id
    assert parents[-1].data.tags["champion.demo-pair"] == f"{MODEL} version {best.version}"


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
def test_the_logged_model_has_its_signature_example_and_dev_metrics(repros):
    from mlflow.models import Model

    client = mlflow_client(repros.project)
    best = champion(client)
    logged = client.get_logged_model(model_id_of(best))
    trial = client.get_run(best.run_id)
    assert {m.key: m.value for m in logged.metrics} == {k: v for k, v in trial.data.metrics.items()
                                                          if k.startswith("dev.")}
    info = Model.load(Path(logged.artifact_location.removeprefix("file://")) / "MLmodel")
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["text", "text_b"]
    assert [c["name"] for c in info.signature.outputs.to_dict()] == ["label", "probabilities"]
    assert info.saved_input_example_info["type"] == "dataframe"
    assert info.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"


def reflinks_here(folder: Path) -> bool:
    """Whether the file system of `folder` makes reflinks (btrfs, XFS: yes; ext4: no)."""
    import fcntl

    from pipeline.models import FICLONE

    (folder / "a").write_bytes(b"x")
    try:
        with open(folder / "a", "rb") as src, open(folder / "b", "wb") as dst:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
def test_the_model_bytes_are_stored_once(repros, tmp_path):
    """The logged model's files are DVC's cached files (hard links to the read-only objects, or reflinks)."""
    from dvc.repo import Repo

    from pipeline.models import _md5

    client = mlflow_client(repros.project)
    with Repo(str(repros.project)) as repo:
        odb = repo.cache.local
    hardlinks = not reflinks_here(tmp_path)  # ext4 here
    for version in client.search_model_versions(f"name = '{MODEL}'"):
        location = Path(client.get_logged_model(model_id_of(version)).artifact_location.removeprefix("file://"))
        # the model folder, under the logged model's artifacts/<folder name>, beside its sha256.json
        model_files = [p for p in (location / "artifacts").rglob("*") if p.is_file()
                       and p.name != "sha256.json"]
        assert {"model.safetensors", "config.json", "vocab.txt"} <= {p.name for p in model_files}
        for logged in model_files:
            cached = Path(odb.oid_to_path(_md5(logged)))
            assert cached.is_file(), logged
            if hardlinks:
                assert os.path.samefile(logged, cached) and not logged.stat().st_mode & 0o222, logged
    # DVC's own outputs stay copies (cache.type reflink,copy): the workspace model is not the cached object
    (weights,) = (repros.project / "models/finetuned/demo-pair/seed1").glob("model.safetensors")
    assert not os.path.samefile(weights, odb.oid_to_path(_md5(weights)))
    # the second and third pipeline runs logged one model each, of one set of weights: one inode
    weights = [next(Path(client.get_logged_model(model_id_of(v)).artifact_location.removeprefix("file://"))
                    .rglob("model.safetensors")) for v in client.search_model_versions(f"name = '{MODEL}'")]
    assert len({w.stat().st_ino for w in weights}) == (2 if hardlinks else 3)


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
def test_a_logged_model_whose_file_changed_is_refused_on_load(repros, tmp_path):
    """MLflow's own loader on a copy of the champion: as logged it loads; one byte changed, one line refuses it."""
    import mlflow.pyfunc
    import pandas as pd

    logged = tmp_path / "logged"
    shutil.copytree(champion_location(repros.project), logged)
    (answer,) = mlflow.pyfunc.load_model(str(logged)).predict(pd.DataFrame([{"text": "a", "text_b": "b"}])).label
    assert answer
    (weights,) = logged.rglob("model.safetensors")
    weights.chmod(0o644)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # the last byte of the last tensor: a file that still loads, with other weights
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors changed since the model was logged") as refused:
        mlflow.pyfunc.load_model(str(logged))
    assert "\n" not in str(refused.value)


@pytest.mark.slow
@pytest.mark.xdist_group("tracking")
def test_mlflow_models_serve_answers_as_bert_predict(repros, tmp_path):
    """`mlflow models serve -m models:/bert-demo-pair@champion` on loopback, a real POST, bert predict's answers."""
    project, port = repros.project, free_port()
    env = tool_env(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    server = subprocess.Popen([str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@champion",
                               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=open(tmp_path / "serve.log", "w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    pairs = dev_pairs(project)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-4000:]
            time.sleep(0.5)
        body = json.dumps({"dataframe_records": [{"text": a, "text_b": b} for a, b in pairs]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as reply:
            served = json.loads(reply.read())["predictions"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    # bert predict on the model folder the champion was logged from (the workspace's: the last training)
    folder = project / "models/finetuned/demo-pair/seed1"  # its task entry (the finetune stage's) says it all
    done = subprocess.run([sys.executable, "-m", "bert.cli.commands", "predict", "--model", str(folder), "--input",
                           str(project / "data/raw/demo-pair/dev.tsv")], cwd=tmp_path, env=tool_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(served) == len(expected) == len(pairs)
    for got, want in zip(served, expected):
        assert got["label"] == want["label"]
        assert set(got["probabilities"]) == set(want["probabilities"])
        for label, p in want["probabilities"].items():
            assert got["probabilities"][label] == pytest.approx(p, abs=1e-5)


def champion_location(project: Path) -> str:
    client = mlflow_client(project)
    return client.get_logged_model(model_id_of(champion(client))).artifact_location.removeprefix("file://")


# ---------------------------------------------------------------------------------------------
# The pieces alone


def test_runs_are_named_for_what_changed():
    from pipeline.tracking import changed_params, pipeline_name
    from pipeline.trials import trial_name

    now = {"tasks": ["mrpc", "rte"], "finetune.learning_rate": 3e-5, "finetune.epochs": 3.0, "seeds": [1, 2]}
    assert changed_params(None, now) is None
    changes = changed_params({"tasks": '["mrpc"]', "finetune.learning_rate": "5e-05", "finetune.epochs": "3.0",
                              "seeds": "[1, 2]", "data.source": "local"}, now)
    assert changes == {"tasks": '["mrpc", "rte"]', "finetune.learning_rate": "3e-05", "data.source": "(none)"}
    assert pipeline_name(now, changes, "0123456789abcdef", "true") == \
        "mrpc,rte | finetune.learning_rate=3e-05, data.source=(none) | 0123456+dirty"
    assert pipeline_name(now, None, None, None) == "mrpc,rte | first run | no git"
    assert pipeline_name(now, {}, "0123456789", "false") == "mrpc,rte | same params | 0123456"
    many = {f"finetune.k{i}": str(i) for i in range(5)}
    assert trial_name("mrpc", 2, many) == "mrpc seed2 | finetune.k0=0, finetune.k1=1, finetune.k2=2 +2 more"
    assert trial_name("mrpc", 2, None) == "mrpc seed2"
    assert trial_name("mrpc", 2, {"finetune.epochs": "3"}, "lr5e-05") == "mrpc lr5e-05 seed2 | finetune.epochs=3"


def test_the_settings_hash_reads_numbers_by_value():
    from pipeline.trials import settings_hash

    section = {"epochs": 2, "learning_rate": 5e-5, "precision": "fp32", "resume": True}
    assert settings_hash(section) == settings_hash({**section, "epochs": 2.0})  # YAML's 2, training.json's 2.0
    assert settings_hash(section) != settings_hash({**section, "learning_rate": 3e-5})
    assert settings_hash(section) != settings_hash({**section, "resume": 1})


def test_the_report_chooses_the_best_run_not_flagged():
    from stages.report import choose_run

    summary = {"primary": "f1", "fine_tuned": {"f1": {"per_seed": {"1": 80.0, "2": 90.0, "3": 85.0}}},
               "flagged_runs": [{"seed": 2, "why": "..."}]}
    folders = {1: "reports/eval/t/seed1", 2: "reports/eval/t/seed2", 3: "reports/eval/t/seed3"}
    assert choose_run(summary, folders) == {"seed": 3, "eval": "reports/eval/t/seed3", "metric": "f1", "value": 85.0,
                                            "rule": "best dev f1 among the runs not flagged"}
    summary["flagged_runs"] = [{"seed": s, "why": "..."} for s in (1, 2, 3)]
    assert choose_run(summary, folders)["seed"] == 2 and choose_run(summary, folders)["flagged"] is True


def test_the_pipeline_run_gets_one_figure_per_task_and_metric():
    from pipeline.stagerun import report_metrics

    summary = {"mrpc": {"primary": "f1", "fine_tuned": {"f1": {"mean": 88.0, "std": 0.5, "per_seed": {"1": 87.5}},
                                                        "acc": {"mean": 84.0, "std": 1.0, "per_seed": {"1": 83.0}}},
                        "untrained": {"f1": 52.0, "acc": 48.0}, "gain_over_untrained": 36.0,
                        "chosen": {"seed": 1, "value": 87.5}}}
    assert report_metrics(summary) == {"mrpc.f1": 88.0, "mrpc.f1.std": 0.5, "mrpc.acc": 84.0,
                                       "mrpc.untrained.f1": 52.0, "mrpc.gain": 36.0}
    assert report_metrics({"loss": {"before": 2.0}}) == {"loss.before": 2.0}  # another stage's: every number


def test_the_report_page_is_logged_with_its_images_inlined(tmp_path):
    from pipeline.stagerun import inline_images

    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(b"\x89PNG fake")
    page = '<p><img src="figures/a.png" alt="a"></p><img src="figures/missing.png">'
    assert inline_images(page, tmp_path) == \
        '<p><img src="data:image/png;base64,iVBORyBmYWtl" alt="a"></p><img src="figures/missing.png">'


def test_a_stage_is_told_from_its_command():
    from pipeline.stagerun import flag, stage_kind

    finetune = "torchrun --nproc_per_node 1 -m stages.finetune --task mrpc --seed 2 --out m".split()
    launched = "python -m bert.engine.launch --nproc_per_node 2 -m stages.finetune --task mrpc --seed 2".split()
    evaluate = "python -m stages.evaluate --task mrpc --model models/finetuned/mrpc/seed2 --out e".split()
    assert [stage_kind(c) for c in (finetune, launched, evaluate, evaluate + ["--untrained"])] == \
        ["trial", "trial", "evaluation", "stage"]
    assert stage_kind("python -m stages.tokenize --task mrpc".split()) == "stage"
    assert (flag(finetune, "--seed"), flag(finetune, "--nothing")) == ("2", None)


@pytest.mark.parametrize("kind, columns", [
    ("pair_classification", ["text", "text_b"]), ("single_classification", ["text", "text_b"]),
    ("squad", ["question", "context"]), ("multiple_choice", ["context", "choices", "prefix"])])
def test_signatures_and_inputs_follow_the_kind(kind, columns):
    import pandas as pd

    from pipeline.models import EXAMPLES, signature_of
    from pipeline.serving import to_inputs

    signature = signature_of(kind, kind == "pair_classification")
    assert [c["name"] for c in signature.inputs.to_dict()] == columns
    word = {"squad": "qa", "multiple_choice": "choice"}.get(kind, "text")
    (record,) = to_inputs(pd.DataFrame([EXAMPLES[kind]]), word)
    assert record.id == "0"
    if kind == "single_classification":
        assert (record.text_a, record.text_b) == (EXAMPLES[kind]["text"], None)
    with pytest.raises(ValueError, match="takes the column 'question'"):
        to_inputs(pd.DataFrame([{"text": "x"}]), "qa")


@pytest.mark.parametrize("link_types", ["reflink,hardlink,symlink,copy", "reflink,copy"])
def test_a_logged_models_files_are_linked_to_dvc_cache_whatever_its_config(tmp_path, link_types):
    """Hard links (or reflinks) to DVC's read-only objects, also where DVC's own outputs are copies."""
    from pipeline.models import link_to_dvc_cache

    project = tmp_path / "p"
    (project / "model").mkdir(parents=True)
    (project / "model" / "weights.bin").write_bytes(os.urandom(4096))
    env = tool_env()
    for cmd in (["init", "--no-scm", "-q"], ["config", "cache.type", link_types], ["add", "-q", "model"]):
        subprocess.run([sys.executable, "-m", "dvc", *cmd], cwd=project, env=env, check=True, capture_output=True)
    logged = tmp_path / "mlartifacts" / "artifacts"
    logged.mkdir(parents=True)
    (logged / "weights.bin").write_bytes((project / "model" / "weights.bin").read_bytes())
    (logged / "MLmodel").write_text("not in DVC's cache\n")
    done = link_to_dvc_cache(project, tmp_path / "mlartifacts")
    cached = [p for p in (project / ".dvc" / "cache" / "files").rglob("*") if p.is_file() and p.stat().st_size == 4096]
    assert len(cached) == 1 and (logged / "weights.bin").read_bytes() == cached[0].read_bytes()
    assert os.path.samefile(logged / "weights.bin", cached[0]) is not reflinks_here(tmp_path)
    assert done == {"linked": 4096, "copied": 19}


def test_two_items_of_a_matrix_are_two_trials_even_with_one_settings_hash(tmp_path, monkeypatch):
    """A finetune item finds its own trial run again (a retry), never another item's of the same task and seed."""
    from pipeline.tracking import Tracker
    from pipeline.trials import FINETUNE_TAG, create_trial, find_trial, register_champion

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "BERT_TRACKING"):
        monkeypatch.delenv(name, raising=False)
    tracker = Tracker(tmp_path)
    assert tracker.connect()
    params = {"task": "mrpc", "seed": 1, "finetune.learning_rate": 5e-5}
    first = create_trial(tracker, None, "mrpc", 1, "k", params, {FINETUNE_TAG: "finetune@mrpc-1-a"})
    assert find_trial(tracker, None, "mrpc", 1, "k", stage="finetune@mrpc-1-a") == first
    assert find_trial(tracker, None, "mrpc", 1, "k", stage="finetune@mrpc-1-b") is None
    second = create_trial(tracker, None, "mrpc", 1, "k", {**params, "finetune.learning_rate": 3e-5},
                          {FINETUNE_TAG: "finetune@mrpc-1-b"})
    runs = {r.info.run_id: r for r in all_runs(mlflow_client(tmp_path))}
    assert runs[second].info.run_name == "mrpc seed1 | finetune.learning_rate=3e-05"
    assert runs[first].data.tags["bert.pipeline_run"] == "none"
    assert register_champion(tracker, second, "mrpc", {}) is None  # no model logged: no champion
    assert tracker.down is None


def test_the_loader_refuses_a_model_folder_whose_files_changed(tmp_path):
    """pipeline/serving.py's check of the sha256s logged with the model: as logged, changed, missing."""
    from bert.io.fingerprint import file_digests
    from pipeline.serving import verify_model_files

    (tmp_path / "sub").mkdir()
    (tmp_path / "model.safetensors").write_bytes(os.urandom(1024))
    (tmp_path / "sub" / "vocab.txt").write_text("[PAD]\n")
    digests = file_digests(tmp_path)
    assert set(digests) == {"model.safetensors", "sub/vocab.txt"}
    verify_model_files(tmp_path, digests)
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[512] ^= 0x80
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    (tmp_path / "sub" / "vocab.txt").unlink()
    with pytest.raises(ValueError) as refused:
        verify_model_files(tmp_path, digests)
    assert str(refused.value).count("\n") == 0
    assert "model.safetensors, sub/vocab.txt changed since the model was logged" in str(refused.value)
