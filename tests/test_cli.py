import subprocess
import sys
from pathlib import Path

import pytest

import anynet
from anynet import cli
from anynet._libraries import unusable_devices

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"anynet {anynet.__version__}"


def test_devices_lists_every_usable_device_and_versions(capsys):
    assert cli.main(["devices"]) == 0
    out = capsys.readouterr().out
    section = out.split("devices usable here")[1].split("installed but not usable here:\n")
    listed = [line.strip() for line in section[0].splitlines()[1:] if line.startswith("  ")]
    assert listed == anynet.available_devices()
    # what is installed but broken, each with its reason (tests/test_libraries.py breaks CuPy and torch's CUDA)
    problems = [line for line in section[1].splitlines() if line.startswith("  ")] if len(section) > 1 else []
    assert problems == [f"  {what}: {why}" for what, why in unusable_devices()]
    import numpy

    assert f"numpy              {numpy.__version__}" in out
    assert f"'auto' picks: {anynet.device('auto').name}" in out


def test_python_dash_m_anynet_and_no_command():
    result = run("-m", "anynet", "devices")
    assert result.returncode == 0 and "  cpu\n" in result.stdout
    result = run("-m", "anynet")
    assert result.returncode == 2 and "devices" in result.stdout


@pytest.mark.parametrize("name", ["cpu", "strict:device1"])
def test_ch3_walkthrough_prints_the_seed_values(name):
    result = run("scripts/ch3_walkthrough.py", "--device", name)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"device: {name}" in out
    assert "[0.2689414, 0.7310586, 0.880797 ]" in out
    assert "[0.5744425, 0.6681878, 0.7502601]" in out
    assert "[0.3168271, 0.6962791]" in out
    assert "[9.999546e-01, 4.539786e-05, 2.061060e-09]" in out


def test_ch3_walkthrough_on_an_unknown_device_is_one_line():
    result = run("scripts/ch3_walkthrough.py", "--device", "tpu")
    assert result.returncode == 1
    assert result.stderr.startswith("error: unknown device 'tpu'") and "Traceback" not in result.stderr


def test_ch3_mnist_inference_reports_a_bad_weights_file_in_one_line(tmp_path):
    weights = tmp_path / "weights.npz"
    import numpy as np

    np.savez(weights, W1=np.zeros((784, 50), dtype=np.float32))
    result = run("scripts/ch3_mnist_inference.py", "--weights", str(weights), "--device", "cpu")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {weights}: no W2, W3, b1, b2, b3; expected the chapter-3 network's W1..b3"
    result = run("scripts/ch3_mnist_inference.py", "--weights", str(tmp_path / "absent.pkl"), "--device", "cpu")
    assert result.returncode == 1 and result.stderr.strip() == f"error: no weights file at {tmp_path / 'absent.pkl'}"
