"""train.train end to end on tiny models: resume after kill -9, strategies, NaN stop, bad input."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import itertools

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from conftest import REPO
from icnet.config import ICNetConfig
from icnet.model import BN_MOMENTUM, build_icnet
from icnet.training import precise_batch_norm
from icnet.weights import model_weights, save_npy_weights

TINY = ["--filter_scale", "0.125", "--batch_size", "2", "--crop_size", "161x161",
        "--synthetic_count", "16",
        "--synthetic_size", "192x256", "--log_every", "1"]


def train_cmd(model_dir, *extra):
    return [sys.executable, "-m", "train.train", "--model_dir", str(model_dir), *TINY, *extra]


def run_train(model_dir, *extra, env=None, timeout=300):
    return subprocess.run(train_cmd(model_dir, *extra), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def checkpoint_steps(model_dir):
    return sorted(int(m.group(1)) for name in os.listdir(model_dir)
                  if (m := re.fullmatch(r"ckpt-(\d+)\.index", name)))


def read_summary(model_dir):
    with open(os.path.join(model_dir, "train_summary.json")) as f:
        return json.load(f)


def first_step_loss(model_dir):
    return read_summary(model_dir)["losses"]["total"]


def test_kill_9_then_same_command_resumes_and_finishes(tmp_path):
    model_dir = tmp_path / "run"
    # --model_dir as users type it: relative to the working directory.
    relative = os.path.relpath(model_dir, REPO)
    args = ("--steps", "40", "--checkpoint_every", "5")
    process = subprocess.Popen(train_cmd(relative, *args), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (
            model_dir.exists() and [s for s in checkpoint_steps(model_dir) if s >= 10]):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = checkpoint_steps(model_dir)
    assert saved and saved[-1] < 40, saved
    result = run_train(relative, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = int(re.search(r"resumed from \S+ \(step (\d+)\)", result.stderr).group(1))
    assert resumed == saved[-1]
    logged = [int(s) for s in re.findall(r"step (\d+)/40", result.stderr)]
    assert logged[0] == resumed + 1 and logged[-1] == 40
    assert checkpoint_steps(model_dir)[-1] == 40
    assert re.search(r"precise BN: the moving statistics of \d+ BN layers re-estimated over "
                     r"20 batches", result.stderr)
    assert "done: step 40" in result.stdout and "final loss" in result.stdout
    summary = read_summary(model_dir)
    assert summary["step"] == 40 and summary["resumed"] is True
    assert summary["finished"] is True and summary["replicas"] == 1
    assert summary["seconds"] >= 0 and summary["losses"]["total"] > 0
    # The record deploy.prune and deploy.export start from: the options and the data.
    assert summary["options"]["steps"] == 40 and summary["options"]["batch_size"] == 2
    assert summary["options"]["checkpoint_every"] == 5
    assert list(summary["options"]["crop_size"]) == [161, 161]
    assert summary["data"]["dataset"] == "synthetic"
    assert summary["data"]["synthetic_size"] == "192x256"
    assert summary["data"]["synthetic_count"] == 16
    # A third run has nothing to do and says so, without checkpoint warnings.
    again = run_train(model_dir, *args)
    assert again.returncode == 0 and "already trained to step 40 of 40" in again.stderr
    assert "could not be found" not in again.stderr
    assert "final loss" not in again.stdout + again.stderr
    assert read_summary(model_dir) == summary  # nothing to do: the summary is kept


def test_precise_bn_gives_inference_the_statistics_of_the_data():
    model = build_icnet(ICNetConfig.from_filter_scale(0.125, 19), (321, 321))
    images = tf.random.stateless_uniform((4, 321, 321, 3), (0, 1), 0, 255)
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            layer.moving_mean.assign(layer.moving_mean + 1.0)
            layer.moving_variance.assign(layer.moving_variance * 9.0)

    def logits(training):
        return model(images, training=training)["conv6_cls"].numpy()

    stale = logits(False)
    precise_batch_norm(model, itertools.repeat((images, None)), 3)
    precise, batch_statistics = logits(False), logits(True)

    def error(x):
        return np.abs(x - batch_statistics).mean() / np.abs(batch_statistics).mean()

    # What is left: the unbiased variance the moving statistics keep (few samples at 1/32).
    assert error(precise) < 0.15 and error(stale) > 0.5, (error(precise), error(stale))
    assert all(layer.momentum == BN_MOMENTUM for layer in model.layers
               if isinstance(layer, tf_keras.layers.BatchNormalization))


def test_mirrored_on_two_logical_cpus_matches_default_first_step(tmp_path):
    args = ("--steps", "1", "--noupdate_mean_var", "--norandom_scale", "--seed", "3")
    default = run_train(tmp_path / "default", *args)
    assert default.returncode == 0, default.stderr[-2000:]
    mirrored = run_train(tmp_path / "mirrored", *args, "--strategy", "mirrored",
                         "--logical_cpus", "2")
    assert mirrored.returncode == 0, mirrored.stderr[-2000:]
    assert read_summary(tmp_path / "mirrored")["replicas"] == 2
    np.testing.assert_allclose(first_step_loss(tmp_path / "mirrored"),
                               first_step_loss(tmp_path / "default"), rtol=2e-3)
    # --seed is recorded with the options (it seeds the data order and augmentation).
    for run in ("default", "mirrored"):
        assert read_summary(tmp_path / run)["options"]["seed"] == 3
        assert read_summary(tmp_path / run)["data"]["seed"] == 3


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_two_local_processes_match_default_first_step(tmp_path):
    args = ("--steps", "1", "--noupdate_mean_var", "--norandom_scale", "--seed", "3")
    default = run_train(tmp_path / "default", *args)
    assert default.returncode == 0, default.stderr[-2000:]
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            train_cmd(tmp_path / "multi", *args, "--strategy", "multi_worker"), cwd=REPO,
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-2000:]
    np.testing.assert_allclose(first_step_loss(tmp_path / "multi"),
                               first_step_loss(tmp_path / "default"), rtol=2e-3)
    assert not [n for n in os.listdir(tmp_path / "multi") if n.startswith(".worker_1")]


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    model_dir = tmp_path / "nan"
    result = run_train(model_dir, "--steps", "30", "--checkpoint_every", "1",
                       "--learning_rate", "1e12")
    assert result.returncode == 1  # a failure while working (icnet.training.TrainingDiverged)
    last = result.stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"error: .*loss became (nan|inf) at step (\d+);.*", last)
    assert match, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    saved = checkpoint_steps(model_dir)
    assert saved and saved[-1] == int(match.group(2)) - 1
    assert f"The last good checkpoint is {model_dir / 'ckpt'}-{saved[-1]}" in last
    summary = read_summary(model_dir)
    assert summary["finished"] is False and summary["step"] == 0


@pytest.mark.parametrize("extra,message", [
    (("--dataset", "cityscapes"), "data_dir"),
    (("--dataset", "cityscapes", "--data_dir", "{empty}"), "{empty}"),
    (("--log_every", "0"), "log_every must be >= 1, got 0"),
    (("--filter_scale", "0"), "filter_scale must be > 0, got 0"),
    (("--crop_size", "100x161"),
     "error: --crop_size: 100x161 is smaller than the smallest input"),
    (("--model", "{fs2_weights}"),
     "{fs2_weights}: weights do not match the model ("),
    (("--dataset", "list", "--num_classes", "3"), "the list dataset needs --train_list"),
])
def test_bad_input_fails_before_training(tmp_path, extra, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    fs2_weights = tmp_path / "fs2.npy"
    fs2 = ICNetConfig.from_filter_scale(0.25, 19, batch_norm=False)
    save_npy_weights(model_weights(build_icnet(fs2, (161, 161))), str(fs2_weights))
    paths = {"{empty}": str(empty), "{fs2_weights}": str(fs2_weights)}
    for key, value in paths.items():
        extra = [e.replace(key, value) for e in extra]
        message = message.replace(key, value)
    model_dir = tmp_path / "run"
    result = run_train(model_dir, "--steps", "5", *extra, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]  # refused before any work
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "error: " in result.stderr
    # A failed first run leaves nothing that would pin the next attempt (no plan.json).
    assert not (model_dir / "plan.json").exists()
    assert not model_dir.exists() or not checkpoint_steps(model_dir)
