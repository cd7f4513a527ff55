"""Fault injection on tiny models: kills during publishing, signals during fine-tunes, damaged
checkpoints, full disks and read-only directories (issue: crash-consistent outputs).

Every binary must leave its target as it was or complete, say what happened in one line, exit
with its documented code, and finish on a rerun of the same command with nothing left over.
"""

import contextlib
import errno
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from conftest import REPO
from deploy import staging as staging_lib
from deploy.export_lib import ExportOptions, export
from deploy.report import ExportReport
from deploy.staging import Staging, recover
from icnet.data import make_source
from icnet.exits import INTERRUPTED

# One worker runs this module: its module-scoped exports are made once (make test runs
# pytest with --dist loadgroup).
pytestmark = pytest.mark.xdist_group("faults")

SIZE = (193, 257)
TINY_DATA = ["--synthetic_size", "192x256", "--synthetic_count", "8"]
TINY_TRAIN = ["--filter_scale", "0.125", "--batch_size", "2", "--crop_size", "161x161",
              "--log_every", "1", *TINY_DATA]


def run(module, *args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def tree_hashes(root) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root`."""
    hashes = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                hashes[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def leftovers(parent, name="out") -> list[str]:
    return sorted(n for n in os.listdir(parent) if n.startswith(f".{name}."))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 2 steps by train.train (so it has a train_summary record)."""
    model_dir = str(tmp_path_factory.mktemp("trained") / "model")
    result = run("train.train", "--model_dir", model_dir, "--steps", "2", *TINY_TRAIN)
    assert result.returncode == 0, result.stderr[-2000:]
    return model_dir


# --------------------------------------------------------------------------------------------
# Publishing: old or new, never a mix.


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory, trained):
    """Two complete exports of different models (for old-or-new checks)."""
    sources = (make_source("synthetic", "train", synthetic_size=SIZE),
               make_source("synthetic", "val", synthetic_size=SIZE))
    base = tmp_path_factory.mktemp("exports")
    old, new = str(base / "old"), str(base / "new")
    options = dict(input_size=SIZE, formats=("saved_model",), parity_images=0, eval_images=0,
                   calibration_images=0, gpu_check="none")
    export(trained, ExportOptions(old, **options), *sources)
    export(trained, ExportOptions(new, model_name="other", **options), *sources)
    return old, new


_PUBLISH = """
import errno, shutil, sys
from deploy import staging

if sys.argv[3] == "fallback":
    def no_renameat2(*args):
        raise OSError(errno.ENOSYS, "renameat2 disabled by the test")
    staging._renameat2 = no_renameat2
s = staging.Staging(sys.argv[1], overwrite=True)
shutil.copytree(sys.argv[2], s.root, dirs_exist_ok=True)
s.publish()
"""


@pytest.mark.parametrize("mode,steps", [("exchange", (1, 2, 3, 4)),
                                        ("fallback", (1, 2, 5, 3, 4))])
def test_a_kill_at_every_publish_step_leaves_the_old_or_the_new_export(tmp_path, two_exports,
                                                                       mode, steps):
    old, new = two_exports
    old_hashes, new_hashes = tree_hashes(old), tree_hashes(new)
    outcomes = []
    for step in steps:
        case = tmp_path / f"step{step}"
        target = case / "out"
        shutil.copytree(old, target)
        env = dict(os.environ, **{staging_lib.KILL_AT_STEP_ENV: str(step)})
        killed = subprocess.run([sys.executable, "-c", _PUBLISH, str(target), new, mode],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert killed.returncode == -signal.SIGKILL, (step, killed.stderr[-1500:])
        recover(str(target))  # what the next run of any tool that writes there does first
        hashes = tree_hashes(target)
        assert hashes in (old_hashes, new_hashes), step
        outcomes.append("new" if hashes == new_hashes else "old")
        report = ExportReport.read(str(target))
        loaded = tf.saved_model.load(os.path.join(target, "saved_model", report.model_name, "1"))
        assert "serving_default" in loaded.signatures
        assert leftovers(case) == [], step
    assert outcomes[0] == "old" and outcomes[-1] == "new"


def test_a_killed_overwrite_export_is_completed_by_the_same_command(tmp_path, trained):
    export_dir = str(tmp_path / "out")
    command = ["--model", trained, "--export_dir", export_dir, "--input_size", "193x257",
               "--formats", "saved_model,onnx", "--parity_images", "0", "--eval_images", "0",
               "--calibration_images", "0", "--quantize", "fp32", *TINY_DATA[:2]]
    assert run("deploy.export", *command).returncode == 0
    before = tree_hashes(export_dir)
    env = dict(os.environ, **{staging_lib.KILL_AT_STEP_ENV: "3"})  # after the switch
    killed = run("deploy.export", *command, "--overwrite", "--model_name", "other", env=env)
    assert killed.returncode == -signal.SIGKILL
    after = tree_hashes(export_dir)
    assert after != before and "onnx/other.onnx" in after  # the new export, complete
    assert leftovers(tmp_path)  # the old export, swapped out, not yet removed
    again = run("deploy.export", *command, "--overwrite", "--model_name", "other")
    assert again.returncode == 0, again.stderr[-2000:]
    assert leftovers(tmp_path) == [] and ExportReport.read(export_dir).model_name == "other"


def test_staging_refuses_what_it_must_not_replace(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "precious.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists and is not empty; pass --overwrite"):
        Staging(str(target))
    with pytest.raises(ValueError, match="not an export; not replacing it"):
        Staging(str(target), overwrite=True, replaceable=lambda path: "not an export")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        Staging(str(tmp_path / "file"), overwrite=True)
    # A target that appears while staging, without overwrite, stops the publish.
    fresh = tmp_path / "fresh"
    with Staging(str(fresh)) as staging:
        (fresh / "theirs").mkdir(parents=True)
        (fresh / "theirs" / "a.txt").write_text("someone else's")
        with open(staging.path("mine.txt"), "w") as f:
            f.write("new")
        with pytest.raises(FileExistsError):
            staging.publish()
    assert os.listdir(fresh) == ["theirs"] and (target / "precious.txt").read_text() == "mine"
    assert leftovers(tmp_path, "fresh") == []


def test_recover_restores_a_previous_export_cut_off_mid_publish(tmp_path):
    target = tmp_path / "out"
    previous = tmp_path / ".out.previous-999999999-abcd"  # a process that no longer runs
    previous.mkdir()
    (previous / "export_report.json").write_text("{}")
    stale = tmp_path / ".out.staging-999999999-efgh"
    stale.mkdir()
    recover(str(target))
    assert (target / "export_report.json").read_text() == "{}"
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Signals and resuming.


def _start(module, *args):
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO,
                            stderr=subprocess.PIPE, text=True)


def _signal_at(process, pattern: str, sig=signal.SIGTERM, timeout: float = 240) -> str:
    """Sends `sig` once a stderr line matches `pattern`; returns all of stderr."""
    lines, deadline = [], time.time() + timeout
    for line in process.stderr:
        lines.append(line)
        if re.search(pattern, line) or time.time() > deadline:
            process.send_signal(sig)
            break
    lines += process.stderr.readlines()
    process.wait(timeout=120)
    return "".join(lines)


def _interrupted_then_resumed(command_module, args, total, work_dir, sig=signal.SIGTERM):
    """A signal mid fine-tune: exit 75, one line, the work kept; the same command resumes."""
    process = _start(command_module, *args)
    stderr = _signal_at(process, rf"step [3-9]/{total}\b", sig)
    assert process.returncode == INTERRUPTED, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    saved = int(re.search(rf"stopped: interrupted by {sig.name}: checkpoint of step (\d+) saved "
                          rf"in \S+{re.escape(os.path.basename(work_dir))}\S*; rerun the same "
                          rf"command to resume", stderr.strip().splitlines()[-1]).group(1))
    assert 3 <= saved < total and os.path.isdir(work_dir)
    resumed = run(command_module, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(rf"resumed from \S+ckpt-{saved} \(step {saved}\)", resumed.stderr)
    logged = [int(s) for s in re.findall(rf"step (\d+)/{total}", resumed.stderr)]
    assert logged[0] == saved + 1 and logged[-1] == total
    assert not os.path.exists(work_dir)
    return resumed


def test_sigterm_mid_export_prune_finetune_then_the_same_command_resumes(tmp_path, trained):
    export_dir = str(tmp_path / "out")
    args = ["--model", trained, "--export_dir", export_dir, "--prune", "--keep", "0.5",
            "--finetune_steps", "40", "--noexport_unpruned", "--input_size", "193x257",
            "--formats", "onnx",
            "--quantize", "fp32", "--parity_images", "0", "--eval_images", "0",
            "--calibration_images", "0", *TINY_DATA[:2]]
    _interrupted_then_resumed("deploy.export", args, 40, str(tmp_path / ".out.work"))
    assert ExportReport.read(export_dir).prune.final.finetune.steps == 40
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_sigint_mid_prune_finetune_then_the_same_command_resumes(tmp_path, trained):
    args = ["--model", trained, "--output_dir", str(tmp_path / "out"), "--keep", "0.5",
            "--finetune_steps", "40"]
    _interrupted_then_resumed("deploy.prune", args, 40, str(tmp_path / ".out.work"),
                              signal.SIGINT)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_sigterm_stops_train_and_a_damaged_newest_checkpoint_is_skipped_on_resume(tmp_path):
    model_dir = tmp_path / "run"
    args = ["--model_dir", str(model_dir), "--steps", "30", "--checkpoint_every", "2",
            *TINY_TRAIN]
    process = _start("train.train", *args)
    stderr = _signal_at(process, r"step (9|1[0-9])/30\b")
    assert process.returncode == INTERRUPTED, stderr[-3000:]
    assert "Traceback" not in stderr
    saved = int(re.search(r"stopped: interrupted by SIGTERM: checkpoint of step (\d+) saved",
                          stderr.strip().splitlines()[-1]).group(1))
    kept = sorted(int(m.group(1)) for n in os.listdir(model_dir)
                  if (m := re.fullmatch(r"ckpt-(\d+)\.index", n)))
    assert kept[-1] == saved and len(kept) == 3, kept
    # Damage the newest checkpoint, and leave what a kill while saving leaves.
    data = [n for n in os.listdir(model_dir) if n.startswith(f"ckpt-{saved}.data")]
    with open(model_dir / data[0], "r+b") as f:
        f.truncate(os.path.getsize(model_dir / data[0]) // 2)
    (model_dir / f"ckpt-{saved + 1}_temp").mkdir()
    resumed = run("train.train", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    warnings = [line for line in resumed.stderr.splitlines() if "is damaged" in line]
    assert len(warnings) == 1 and f"ckpt-{saved} " in warnings[0] + " "
    assert "damaged_checkpoints" in warnings[0]
    assert f"(step {kept[-2]})" in resumed.stderr and "step 30/30" in resumed.stderr
    assert sorted(os.listdir(model_dir / "damaged_checkpoints")) == sorted(
        [f"ckpt-{saved}.index", *data])
    assert not (model_dir / f"ckpt-{saved + 1}_temp").exists()
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-30")


# --------------------------------------------------------------------------------------------
# Full disks and read-only directories.


@contextlib.contextmanager
def tmpfs(path, size: str, read_only: bool = False):
    """A tmpfs mounted at `path` (root only; the test is skipped, saying so, elsewhere)."""
    os.makedirs(path)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _export_args(model, export_dir):
    return ["--model", model, "--export_dir", export_dir, "--input_size", "193x257",
            "--formats", "saved_model,tflite,onnx", "--quantize", "fp32", "--parity_images",
            "0", "--eval_images", "0", "--calibration_images", "0", *TINY_DATA[:2]]


@pytest.mark.parametrize("read_only", [False, True])
def test_full_or_read_only_disk_gives_one_line_and_leaves_nothing(tmp_path, trained, read_only):
    disk = tmp_path / "disk"
    reason = "read-only file system" if read_only else "no space left on device"
    with tmpfs(disk, "200k", read_only):
        commands = {
            "deploy.export": _export_args(trained, str(disk / "out")),
            "train.train": ["--model_dir", str(disk / "out"), "--steps", "2",
                            "--checkpoint_every", "1", *TINY_TRAIN],
            "deploy.prune": ["--model", trained, "--output_dir", str(disk / "out")],
        }
        for module, args in commands.items():
            result = run(module, *args)
            assert result.returncode == 1, (module, result.stderr[-3000:])
            line = last_line(result)
            assert line.startswith(f"error: {disk}") and line.endswith(reason), (module, line)
            assert "Traceback" not in result.stderr, module
            if module == "train.train":  # no checkpoint at all, and no partial one
                names = os.listdir(disk / "out") if (disk / "out").exists() else []
                assert not [n for n in names if n.startswith("ckpt-")], names
            else:
                assert not (disk / "out").exists(), module
                assert not [n for n in os.listdir(disk) if ".staging-" in n], module
            shutil.rmtree(disk / "out", ignore_errors=True)


def test_io_errors_are_described_by_path_and_reason():
    from icnet.exits import describe_io_error
    error = OSError(errno.ENOSPC, "No space left on device", "/data/out/x.tflite")
    assert describe_io_error(error) == "/data/out/x.tflite: no space left on device"
    tf_error = tf.errors.ResourceExhaustedError(
        None, None, "/data/run/ckpt-1_temp/part-00000-of-00001.data-00000-of-00001.tempstate1; "
                    "No space left on device")
    assert describe_io_error(tf_error) == (
        "/data/run/ckpt-1_temp/part-00000-of-00001.data-00000-of-00001.tempstate1: no space "
        "left on device")
    assert describe_io_error(ValueError("no")) is None
