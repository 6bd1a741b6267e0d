"""LipSim training on Ray Train: [[train]] validation, fine-tuning, distillation with a cached teacher,
resumption after a kill, and the runner's failure report."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from jobs.train import runner
from jobs.train.cli import add_parser, table_from_args
from jobs.train.common import DONE_FILE, STATE_FILE, is_finished, read_log
from jobs.train.spec import TrainSpec, parse_train_tables
from suite.errors import SuiteError

#: a student small enough for a few CPU steps per second: 32×32 input, 2 conv and 1 dense SLL layers
TINY_MODEL = {"input_size": 32, "conv_depth": 2, "dense_depth": 1, "dense_inner": 64}


def finetune_table(**overrides) -> dict:
    table = {
        "name": "ft", "stage": "finetune", "preset": "tiny", "model_options": TINY_MODEL,
        "dataset": "synthetic-2afc", "dataset_options": {"count": 64, "image_size": 32},
        "val_options": {"count": 32}, "epochs": 2, "batch_size": 16, "lr": 1e-3,
    }
    return {**table, **overrides}


# ---------------------------------------------------------------- [[train]] tables


def test_margins_expand_into_one_model_per_margin(tmp_path):
    specs = parse_train_tables([finetune_table(name="lipsim-tiny", margins=[0.2, 0.4, 0.5],
                                               output="models/lipsim-tiny")], tmp_path)
    assert [s.name for s in specs] == ["lipsim-tiny-m0.2", "lipsim-tiny-m0.4", "lipsim-tiny-m0.5"]
    assert [s.margin for s in specs] == [0.2, 0.4, 0.5]
    assert [s.output for s in specs] == [tmp_path.resolve() / "models" / f"lipsim-tiny-m{m}" for m in ("0.2", "0.4", "0.5")]
    assert len({s.recipe_hash() for s in specs}) == 3


def test_default_output_is_under_the_results_folder_and_spec_round_trips(tmp_path):
    (spec,) = parse_train_tables([finetune_table()], tmp_path)
    assert spec.output == tmp_path.resolve() / "models" / "ft"
    assert TrainSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"margin": -0.2}, "margin must be a finite number ≥ 0"),
        ({"margins": [0.2, -1]}, "margins must be a finite number ≥ 0"),
        ({"margins": []}, "margins must be a non-empty list"),
        ({"stage": "pretrain"}, "stage must be one of finetune, distill"),
        ({"epochs": 0}, "epochs must be an integer ≥ 1"),
        ({"dataset": "nigths"}, "unknown dataset 'nigths'; did you mean nights"),
        ({"epoch": 3}, "unknown keys epoch (did you mean epochs?)"),
        ({"lr": 0}, "lr must be a finite number > 0"),
        ({"batch_size": 1, "num_workers": 2}, "must be at least num_workers"),
        ({"betas": [0.9, 1.0]}, "betas must be two numbers in [0, 1)"),
        ({"preset": "tinny"}, "did you mean tiny"),
        ({"decay": "linear"}, "decay must be one of cosine, step, constant"),
        ({"teacher": "dreamsim"}, "apply to stage = \"distill\" only"),
        ({"margin": 0.2, "margins": [0.2]}, "not both"),
        ({"init": "no-such-table"}, "neither an existing path nor the name of a [[train]] table"),
        ({"model_options": {"depth": 3}}, "unknown fields ['depth']"),
        ({"use_gpu": "yes"}, "use_gpu must be true or false"),
    ],
)
def test_bad_values_fail_with_one_clear_line(tmp_path, overrides, message):
    with pytest.raises(SuiteError) as err:
        parse_train_tables([finetune_table(**overrides)], tmp_path)
    assert message in str(err.value)
    assert "[[train]]" in str(err.value)
    assert "\n" not in str(err.value)


def test_distill_tables_reject_a_margin_and_unknown_teachers(tmp_path):
    with pytest.raises(SuiteError, match="margin applies to stage = \"finetune\" only"):
        parse_train_tables([{"name": "d", "stage": "distill", "margin": 0.5}], tmp_path)
    with pytest.raises(SuiteError, match="teacher: unknown metric 'dreamsym'"):
        parse_train_tables([{"name": "d", "stage": "distill", "teacher": "dreamsym"}], tmp_path)
    with pytest.raises(SuiteError, match="has no embed"):
        parse_train_tables([{"name": "d", "stage": "distill", "teacher": "ssim"}], tmp_path)


def test_init_may_name_another_table_which_then_comes_first(tmp_path):
    distill = {"name": "d", "stage": "distill", "teacher": "lipsim", "preset": "tiny"}
    specs = parse_train_tables([finetune_table(init="d", margins=[0.2, 0.5]), distill], tmp_path)
    by_name = {s.name: s for s in specs}
    assert by_name["ft-m0.2"].init == by_name["d"].output and by_name["ft-m0.2"].init_from == "d"
    with pytest.raises(SuiteError, match="cycle"):
        parse_train_tables([finetune_table(name="a", init="b"), finetune_table(name="b", init="a")], tmp_path)
    with pytest.raises(SuiteError, match="used twice"):
        parse_train_tables([finetune_table(), finetune_table()], tmp_path)


def test_cli_flags_mirror_the_table_keys(tmp_path):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args([
        "train", "finetune", "--preset", "tiny", "--model-option", "input_size=32", "--dataset", "synthetic-2afc",
        "--dataset-option", "count=64", "--margin", "0.2", "--margin", "0.5", "--epochs", "3", "--batch-size", "8",
        "--lr", "0.01", "--betas", "0.5", "0.9", "--num-workers", "2", "--output", "out",
    ])
    table = table_from_args(args)
    assert table["margins"] == [0.2, 0.5] and table["model_options"] == {"input_size": 32}
    assert table["dataset_options"] == {"count": 64} and table["betas"] == [0.5, 0.9]
    specs = parse_train_tables([table], tmp_path)
    assert [s.output.name for s in specs] == ["out-m0.2", "out-m0.5"]
    args = parser.parse_args(["train", "distill", "--teacher", "lipsim", "--teacher-option", "seed=3",
                              "--images", str(tmp_path)])
    table = table_from_args(args)
    assert table["teacher_options"] == {"seed": 3} and table["images"] == str(tmp_path)
    (spec,) = parse_train_tables([table], tmp_path)
    assert spec.stage == "distill" and spec.images == tmp_path.resolve() and spec.dataset is None


# ---------------------------------------------------------------- the runner


def test_run_all_names_every_failed_spec_after_the_others_finish(ray_cluster, tmp_path, monkeypatch):
    specs = parse_train_tables([finetune_table(name="ok"), finetune_table(name="bad"),
                                finetune_table(name="after-bad", init="bad")], tmp_path)
    finished = []

    def fake_train_one(spec):
        if spec.name == "bad":
            raise SuiteError("[[train]] 'bad' failed: boom")
        time.sleep(0.3)  # finishes after the failure
        finished.append(spec.name)
        return spec.output

    monkeypatch.setattr(runner, "train_one", fake_train_one)
    with pytest.raises(SuiteError) as err:
        runner.run_all(specs, progress=False)
    assert finished == ["ok"]
    assert "bad: [[train]] 'bad' failed: boom" in str(err.value)
    assert "after-bad: not run: its init 'bad' failed" in str(err.value)


def test_an_output_folder_of_another_recipe_is_refused(tmp_path):
    (spec,) = parse_train_tables([finetune_table()], tmp_path)
    runner.write_recipe(spec)
    runner.check_recipe(spec)
    (other,) = parse_train_tables([finetune_table(lr=0.5)], tmp_path)
    with pytest.raises(SuiteError, match=r"another recipe \(changed: lr\)"):
        runner.check_recipe(other)


# ---------------------------------------------------------------- training on Ray


def test_distillation_runs_the_teacher_once_and_lowers_the_rmse(ray_cluster, tmp_path, cache_dir):
    import metrics

    table = {
        "name": "distilled", "stage": "distill", "preset": "tiny", "model_options": TINY_MODEL,
        # a random LipSim teacher; requires_bias makes it 129-d, unlike the student preset's 128
        "teacher": "lipsim", "teacher_options": {"preset": "tiny", "seed": 1, "requires_bias": True},
        # one torch thread: with two, every step of this tiny student waits on OpenMP threads that spin against
        # the other processes of a 2-core machine (epochs took 4 s instead of 0.4 s)
        "image_count": 96, "shard_size": 32, "epochs": 4, "batch_size": 16, "lr": 0.01, "betas": [0.5, 0.9],
        "cpus_per_worker": 1,
    }
    (spec,) = parse_train_tables([table], tmp_path)
    assert spec.cache_dir == cache_dir.resolve()
    trained = runner.run_all([spec], progress=False)
    assert trained == {"distilled": spec.output}

    rows = read_log(spec.output)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["teacher_calls"] == 3 * 2  # 3 shards of 32 images, batches of 16
    assert [r["teacher_calls"] for r in rows[1:]] == [0, 0, 0]
    assert rows[-1]["rmse"] < 0.9 * rows[0]["rmse"]
    assert len(list((cache_dir / "teacher-embeddings").glob("*/shard-*.safetensors"))) == 3

    student = metrics.load("lipsim", weights=str(spec.output))
    assert student.net.config.embed_dim == 129
    assert not (spec.output / STATE_FILE).exists()

    done = (spec.output / DONE_FILE).stat().st_mtime_ns
    assert runner.run_all([spec], progress=False) == {"distilled": spec.output}  # a finished run is a no-op
    assert (spec.output / DONE_FILE).stat().st_mtime_ns == done


def test_killed_finetune_on_two_workers_resumes_from_its_last_checkpoint(ray_cluster, tmp_path, cache_dir, capsys,
                                                                       monkeypatch):
    import metrics
    from jobs.train.cli import main as train_cli

    output = tmp_path / "ft"
    # 8 epochs of 5 steps (80 triplets, 2 workers × 8): the run goes on for seconds after its first checkpoint,
    # time enough to kill it
    arguments = [
        "finetune", "--name", "ft", "--preset", "tiny", *[f"--model-option={k}={v}" for k, v in TINY_MODEL.items()],
        "--dataset", "synthetic-2afc", "--dataset-option", "count=80", "--dataset-option", "image_size=32",
        "--val-option", "count=32", "--epochs", "8", "--batch-size", "16", "--lr", "0.001", "--margin", "0.2",
        "--num-workers", "2", "--output", str(output), "--address", ray_cluster.get_runtime_context().gcs_address,
        "--no-progress",
    ]
    command = [sys.executable, "-m", "jobs.train.cli", *arguments]
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    drained = threading.Thread(target=first.stdout.read, daemon=True)
    drained.start()
    deadline = time.monotonic() + 120
    while not (output / STATE_FILE).exists():
        assert first.poll() is None, "the first run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert not is_finished(output), "the run finished before it could be killed: make its epochs longer"
    killed_after = {r["epoch"] for r in read_log(output)}
    assert 1 in killed_after and 8 not in killed_after

    # the same command again, in this process (already on the cluster: no interpreter and imports to start)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = train_cli(arguments)
    out, err = capsys.readouterr()
    assert code == 0, out[-3000:] + err[-3000:]
    rows = read_log(output)
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    resumed = [r for r in rows if r["start_epoch"] > 0]
    assert resumed and resumed[0]["epoch"] >= 2 and resumed[0]["start_epoch"] == resumed[0]["epoch"] - 1
    assert all(r["workers"] == 2 and 0 <= r["val_score"] <= 1 for r in rows)
    assert is_finished(output)
    metric = metrics.load("lipsim", weights=str(output))
    assert metric.net.config.input_size == 32
