"""Training runs of the real `anynet` command that go wrong: a diverging learning rate, a checkpoint of another run,
a checkpoint another run is writing, Ctrl-C. Each is one line on stderr that says what happened and what to do, and
no file is lost or overwritten. On real Fashion-MNIST with a small net and large batches (about a second an epoch)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

DATA = os.environ.get("ANYNET_DATA")
pytestmark = pytest.mark.skipif(
    not DATA or not Path(DATA, "fashion-mnist", "train-images-idx3-ubyte.gz").is_file(),
    reason="real data absent: set ANYNET_DATA to a folder with fashion-mnist/ (CI uses ../shared/data)",
)
ROOT = Path(__file__).resolve().parents[1]
SMALL = ["train", "--dataset", "fashion-mnist", "--hidden", "20", "--batch-size", "1000", "--device", "cpu",
         "--seed", "0"]


# The runs find the data through ANYNET_DATA only: their parsed-data cache is their own, and nothing is downloaded.
ENV: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _isolated(tmp_path_factory):
    ENV.update(os.environ, XDG_CACHE_HOME=str(tmp_path_factory.mktemp("cache")),
               ANYNET_MNIST_MIRROR="http://127.0.0.1:9/", ANYNET_FASHION_MNIST_MIRROR="http://127.0.0.1:9/")


def _command(*args):
    return [sys.executable, "-m", "anynet", *map(str, args)]


def _anynet(*args):
    return subprocess.run(_command(*args), capture_output=True, text=True, cwd=ROOT, timeout=300, env=ENV)


def test_a_diverging_learning_rate_stops_the_run_in_one_line_and_saves_nothing(tmp_path):
    result = _anynet(*SMALL, "--optimizer", "adam", "--lr", "1e6", "--epochs", "2", "--save", tmp_path / "m.npz")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("anynet train: error: the loss ")
    assert "at epoch 1, step " in lines[0] and "learning rate is likely too high for Adam: lr=1e+06" in lines[0]
    assert "RuntimeWarning" not in result.stderr and "final test accuracy" not in result.stdout
    assert not (tmp_path / "m.npz").exists()


def test_resuming_with_other_settings_is_refused_unless_asked(tmp_path):
    checkpoint = tmp_path / "ck.npz"
    first = _anynet(*SMALL, "--optimizer", "sgd", "--lr", "0.1", "--epochs", "1", "--checkpoint", checkpoint)
    assert first.returncode == 0, first.stderr
    before = checkpoint.read_bytes()
    again = [*SMALL, "--optimizer", "sgd", "--epochs", "2", "--resume", checkpoint, "--checkpoint", checkpoint]
    refused = _anynet(*again, "--lr", "0.5")
    assert refused.returncode == 1
    assert "lr 0.5 vs 0.1 in the checkpoint" in refused.stderr and "--resume-anyway" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1 and "training on" not in refused.stdout
    assert checkpoint.read_bytes() == before  # the refused run wrote nothing
    anyway = _anynet(*again, "--lr", "0.5", "--resume-anyway")
    assert anyway.returncode == 0, anyway.stderr
    assert " 2/2 " in anyway.stdout and "final test accuracy" in anyway.stdout


def test_a_checkpoint_another_live_run_is_writing_is_refused(tmp_path):
    checkpoint = tmp_path / "ck.npz"
    lock = Path(f"{checkpoint}.lock")
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
    result = _anynet(*SMALL, "--epochs", "1", "--checkpoint", checkpoint)
    assert result.returncode == 1
    assert f"is being written by process {os.getpid()}" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not checkpoint.exists() and lock.is_file()  # the other run's lock is left to it


def test_ctrl_c_says_which_checkpoint_to_resume_from(tmp_path):
    checkpoint = tmp_path / "ck.npz"
    run = subprocess.Popen(_command(*SMALL, "--batch-size", "100", "--epochs", "50", "--checkpoint", checkpoint),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.05)
        assert checkpoint.exists(), "no epoch finished"
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anynet train: interrupted in epoch ")
    assert f"of 50; resume with --resume {checkpoint} (it holds epoch " in lines[0]
    assert not Path(f"{checkpoint}.lock").exists()


def test_a_killed_run_resumes_to_the_same_result_as_an_unbroken_one(tmp_path):
    """SIGKILL mid-run (no handler runs): the last checkpoint is whole, the dead run's lock and temporary files do not
    block or litter the resumed run, and it ends exactly where a run never killed ends."""
    run_args = [*SMALL, "--batch-size", "200", "--epochs", "4"]
    unbroken = _anynet(*run_args)
    assert unbroken.returncode == 0, unbroken.stderr
    checkpoint = tmp_path / "ck.npz"
    run = subprocess.Popen(_command(*run_args, "--checkpoint", checkpoint), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.02)
        run.kill()
        run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == -signal.SIGKILL and checkpoint.exists()
    resumed = _anynet(*run_args, "--checkpoint", checkpoint, "--resume", checkpoint)
    assert resumed.returncode == 0, resumed.stderr
    final = [line for line in unbroken.stdout.splitlines() if line.startswith("final test accuracy")]
    assert final and final == [line for line in resumed.stdout.splitlines() if line.startswith("final test accuracy")]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ck.npz"]  # no lock, no temporary file left
