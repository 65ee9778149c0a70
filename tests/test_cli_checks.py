"""The `anynet` command refusing what it cannot do right, in one line and before any long work: weights files
without an architecture or with broken entries, contradicting options, output paths that cannot be written, data
folders that are not there, dataset files that are not the published ones. Each case runs the real command."""

import ctypes
import gzip
import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anynet.idx import write_idx
from anynet.io import save_params
from anynet.networks import MultiLayerNet

ROOT = Path(__file__).resolve().parents[1]


def environment(tmp_path, **changes):
    """The environment of a run that finds no dataset by itself and downloads nothing: an empty cache, no
    $ANYNET_DATA, unreachable mirrors."""
    env = {key: value for key, value in os.environ.items() if key != "ANYNET_DATA"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), HOME=str(tmp_path / "home"),
               ANYNET_MNIST_MIRROR="http://127.0.0.1:9/", ANYNET_FASHION_MNIST_MIRROR="http://127.0.0.1:9/")
    env.update(changes)
    return env


def anynet(*args, env, preexec_fn=None):
    return subprocess.run([sys.executable, "-m", "anynet", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120, preexec_fn=preexec_fn)


def assert_one_line_error(result, command, message):
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == f"anynet {command}: error: {message}\n"
    assert "training on" not in result.stdout and "accuracy" not in result.stdout


def relu_weights(sizes=(784, 100, 100, 10), seed=0):
    return dict(MultiLayerNet(sizes[0], list(sizes[1:-1]), sizes[-1], seed=seed).params)


# -- weights files -------------------------------------------------------------------------------------------------


def test_an_npz_without_architecture_is_refused_with_the_fix(tmp_path):
    path = save_params(tmp_path / "model.npz", relu_weights())  # a dict of arrays: nothing says "relu"
    result = anynet("evaluate", "--weights", path, "--device", "cpu", env=environment(tmp_path))
    assert_one_line_error(result, "evaluate", (
        f"{path}: records no architecture, so its activation is unknown (an .npz saved with save_params(path, "
        "network.params)?); name it: --sizes 784,100,100,10 --activation relu (or sigmoid) --dataset mnist (or "
        "fashion-mnist), or save the network itself: anynet.save_params(path, network)"))


def test_an_npz_without_dataset_is_refused_with_the_fix(tmp_path):
    path = save_params(tmp_path / "model.npz", MultiLayerNet(784, [20], 10, seed=0))  # architecture only
    result = anynet("evaluate", "--weights", path, "--device", "cpu", env=environment(tmp_path))
    assert_one_line_error(result, "evaluate", (
        f"{path}: records no dataset, so which test images to score is unknown; name it: --dataset mnist (or "
        "fashion-mnist), or save it with the weights: anynet.save_params(path, network, metadata={\"dataset\": "
        "\"mnist\"})"))


@pytest.mark.parametrize(
    "options, message",
    [
        (["--dataset", "mnist"], "--dataset mnist: {path} was trained on fashion-mnist; leave out --dataset, or name "
                                 "fashion-mnist"),
        (["--activation", "sigmoid"], "--activation sigmoid: {path} records relu; leave out --activation"),
        (["--sizes", "784,50,10"], "--sizes 784,50,10: the weights in {path} are a 784-20-10 network"),
    ],
)
def test_options_that_contradict_the_file_are_refused(tmp_path, options, message):
    path = save_params(tmp_path / "model.npz", MultiLayerNet(784, [20], 10, seed=0),
                       metadata={"dataset": "fashion-mnist"})
    result = anynet("evaluate", "--weights", path, "--device", "cpu", *options, env=environment(tmp_path))
    assert_one_line_error(result, "evaluate", message.format(path=path))


def _with(**changes):
    params = relu_weights((784, 50, 10))
    params.update(changes)
    return params


@pytest.mark.parametrize(
    "params, metadata, message",
    [
        (_with(W1=np.zeros(784, np.float32)), {},
         "W1 has shape (784,), expected a 2-D weight matrix (inputs, outputs)"),
        (_with(), {"architecture": {"sizes": [784, 50, 10]}, "dataset": "mnist"},
         "metadata 'architecture' has no 'activation'; expected {\"sizes\": [...], \"activation\": \"relu\" or "
         "\"sigmoid\"} as anynet train --save writes"),
        (_with(b2=np.full(10, np.nan, np.float32)), {"dataset": "mnist"},
         "b2 holds 10 NaN or infinite values (of 10), expected finite numbers; the weights are damaged (a diverged "
         "training?) and cannot be evaluated"),
        (_with(), {"architecture": {"sizes": [784, 50, 10], "activation": "tanh"}, "dataset": "mnist"},
         "metadata 'architecture' activation 'tanh', expected one of sigmoid, relu"),
    ],
)
def test_malformed_weights_are_refused_naming_the_file_and_the_entry(tmp_path, params, metadata, message):
    path = save_params(tmp_path / "model.npz", params, metadata=metadata)
    result = anynet("evaluate", "--weights", path, "--device", "cpu", env=environment(tmp_path))
    assert_one_line_error(result, "evaluate", f"{path}: {message}")


def _extend_file(**changes):
    """A MultiLayerNetExtend 784-50-10 with batch norm and dropout: its arrays (with ``changes``, None removing an
    entry) and its metadata, as anynet train --save writes them."""
    from anynet.networks import MultiLayerNetExtend

    net = MultiLayerNetExtend(784, [50], 10, use_batchnorm=True, use_dropout=True, dropout_ration=0.15, seed=0)
    arrays = {name: np.asarray(value) for name, value in net.state_arrays().items()}
    for name, value in changes.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    return arrays, {"architecture": net.architecture(), "dataset": "mnist"}


@pytest.mark.parametrize(
    "arrays, metadata, message",
    [
        (*_extend_file(running_mean1=None, running_var1=None),
         "no running_mean1, running_var1; expected the weights of fully connected layers with batch norm (the file's "
         "architecture records use_batchnorm): W1, b1, gamma1, beta1, running_mean1, running_var1, ..., Wn, bn; the "
         "running statistics are saved with the parameters by anynet.save_params(path, network) and anynet train "
         "--save (a dict of network.params leaves them out)"),
        (*_extend_file(gamma1=np.ones(49, np.float32)),
         "gamma1 has shape (49,), expected (50,): one per output of W1 (batch norm of hidden layer 1)"),
        (*_extend_file(running_var1=np.full(50, -1.0, np.float32)),
         "running_var1 holds 50 negative values (of 50), expected variances >= 0; the running statistics are "
         "damaged and cannot be evaluated"),
        (_extend_file()[0], {"dataset": "mnist"},
         "unexpected beta1, gamma1, running_mean1, running_var1; expected the weights of fully connected layers: W1, "
         "b1, ..., Wn, bn; batch norm's entries need an architecture with \"model\": \"mlp-extend\" and "
         "\"use_batchnorm\": true, and the file records no architecture: save the network itself, "
         "anynet.save_params(path, network)"),
        (_extend_file()[0], {**_extend_file()[1], "architecture": {**_extend_file()[1]["architecture"],
                                                                   "dropout_ration": 1.5}},
         "metadata 'architecture' dropout_ration is 1.5, expected a number in [0, 1): the fraction of hidden units "
         "dropout drops at train time"),
    ],
)
def test_malformed_mlp_extend_files_are_refused_naming_the_entry(tmp_path, arrays, metadata, message):
    path = save_params(tmp_path / "model.npz", arrays, metadata=metadata)
    result = anynet("evaluate", "--weights", path, "--device", "cpu", env=environment(tmp_path))
    assert_one_line_error(result, "evaluate", f"{path}: {message}")


def test_an_empty_weights_file_is_refused(tmp_path):
    empty = tmp_path / "model.npz"
    np.savez(empty)
    result = anynet("evaluate", "--weights", empty, "--device", "cpu", env=environment(tmp_path))
    assert_one_line_error(result, "evaluate",
                          f"{empty}: holds no arrays; expected a network's weights W1, b1, ..., Wn, bn")


# -- output paths: checked before training -------------------------------------------------------------------------


def _without_root_override():
    """In the child: drop the capabilities that let root write where permissions forbid it (so a read-only folder
    is read-only to root too); the child then runs as root without them."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone from what the exec'd program gets
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_a_read_only_folder_is_refused_before_training(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        for option in ("--save", "--checkpoint"):
            result = anynet("train", option, folder / "m.npz", "--device", "cpu", env=environment(tmp_path),
                            preexec_fn=_without_root_override)
            assert_one_line_error(result, "train", f"{option} {folder / 'm.npz'}: cannot write in the folder {folder} "
                                                   "(Permission denied); choose a writable folder")
    finally:
        folder.chmod(0o755)
    assert list(folder.iterdir()) == []  # the probe file was not left behind either


@pytest.mark.parametrize("option", ["--save", "--checkpoint", "--plot"])
def test_a_folder_as_the_output_file_is_refused_before_training(tmp_path, option):
    example = {"--save": "model.npz", "--checkpoint": "checkpoint.npz", "--plot": "plot.png"}[option]
    result = anynet("train", option, tmp_path, "--device", "cpu", env=environment(tmp_path))
    assert_one_line_error(result, "train", f"{option} {tmp_path}: is a folder; name a file in it, e.g. "
                                           f"{tmp_path / example}")


def test_an_output_under_a_file_or_a_missing_folder_is_refused_before_training(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    result = anynet("train", "--save", tmp_path / "notes.txt" / "m.npz", "--device", "cpu", env=environment(tmp_path))
    assert_one_line_error(result, "train", f"--save {tmp_path / 'notes.txt' / 'm.npz'}: {tmp_path / 'notes.txt'} is "
                                           "not a folder")
    result = anynet("train", "--checkpoint", tmp_path / "no" / "c.npz", "--device", "cpu", env=environment(tmp_path))
    assert_one_line_error(result, "train", f"--checkpoint {tmp_path / 'no' / 'c.npz'}: the folder {tmp_path / 'no'} "
                                           "does not exist")


def test_a_tilde_is_expanded_before_the_check(tmp_path):
    (tmp_path / "home").mkdir()
    result = anynet("train", "--save=~/missing/m.npz", "--device", "cpu", env=environment(tmp_path))
    assert_one_line_error(result, "train", f"--save {tmp_path / 'home' / 'missing' / 'm.npz'}: the folder "
                                           f"{tmp_path / 'home' / 'missing'} does not exist")


def test_two_outputs_on_one_file_are_refused(tmp_path):
    target = tmp_path / "m.npz"
    result = anynet("train", "--save", target, "--checkpoint", target, "--device", "cpu", env=environment(tmp_path))
    assert_one_line_error(result, "train", f"--save and --checkpoint name the same file {target}; give each its own "
                                           "file")


# -- data folders and files ----------------------------------------------------------------------------------------


def test_a_missing_data_dir_is_an_error(tmp_path):
    for command in (["train"], ["evaluate", "--weights", save_params(tmp_path / "m.npz", relu_weights(),
                                                                     metadata={"dataset": "mnist"})]):
        result = anynet(*command, "--data-dir", tmp_path / "typo", "--device", "cpu", env=environment(tmp_path))
        assert_one_line_error(result, command[0], f"--data-dir {tmp_path / 'typo'}: no such folder (expected the "
                                                  "folder that holds mnist/ and fashion-mnist/, as ANYNET_DATA does)")


def _book_pickle(path):
    rng = np.random.default_rng(0)
    shapes = {"W1": (784, 50), "b1": (50,), "W2": (50, 100), "b2": (100,), "W3": (100, 10), "b3": (10,)}
    path.write_bytes(pickle.dumps({k: rng.normal(0, 0.1, s).astype(np.float32) for k, s in shapes.items()}, protocol=3))
    return path


def test_a_dataset_file_that_is_not_the_published_one_is_refused(tmp_path):
    """Images of the right format and shape that are not MNIST's (here all zeros), where MNIST's should be."""
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 28, 28), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(10000, np.uint8))
    weights = _book_pickle(tmp_path / "sample_weight.pkl")
    result = anynet("evaluate", "--weights", weights, "--data-dir", tmp_path / "data", "--device", "cpu",
                    env=environment(tmp_path))
    content = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert_one_line_error(result, "evaluate", (
        f"{folder / 't10k-images-idx3-ubyte.gz'}: expected mnist's t10k-images-idx3-ubyte.gz, but its data is not the "
        f"published file's (modified, or another dataset in the same format) (md5 of the uncompressed data "
        f"{hashlib.md5(content).hexdigest()}, expected 2646ac647ad5339dbf082846283269ea); put the published file "
        "there, or delete this one and anynet downloads it"))


def test_missing_data_is_reported_in_the_commands_words(tmp_path):
    (tmp_path / "data").mkdir()
    path = save_params(tmp_path / "m.npz", MultiLayerNet(784, [8], 10, seed=0), metadata={"dataset": "fashion-mnist"})
    result = anynet("evaluate", "--weights", path, "--data-dir", tmp_path / "data", "--device", "cpu",
                    env=environment(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    cache = tmp_path / "cache" / "anynet" / "fashion-mnist"
    assert lines[:2] == [f"anynet: downloading fashion-mnist/{name} into {cache}"
                         for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]
    assert lines[2] == ("anynet evaluate: error: fashion-mnist test split: missing t10k-images-idx3-ubyte.gz, "
                        "t10k-labels-idx1-ubyte.gz")
    assert f"  {tmp_path / 'data' / 'fashion-mnist'} (--data-dir)" in lines
    assert f"  {tmp_path / 'data'} (--data-dir itself)" in lines
    assert (f"To fix: download the files by hand (e.g. from http://127.0.0.1:9/) into {cache}, or into "
            "FOLDER/fashion-mnist/ and pass --data-dir FOLDER (or set ANYNET_DATA=FOLDER); set "
            "ANYNET_FASHION_MNIST_MIRROR to other mirrors (comma-separated base URLs).") in lines
    assert ("On Debian or Ubuntu, sudo apt-get install dataset-fashion-mnist puts the files in "
            "/usr/share/datasets/fashion-mnist, where anynet finds them with no download.") in lines
    assert "root=" not in result.stderr and "data_dir=" not in result.stderr


def test_a_device_without_int64_is_refused_before_training(tmp_path):
    pytest.importorskip("array_api_strict")
    result = anynet("train", "--device", "strict:no_x64", "--epochs", "1", env=environment(tmp_path))
    assert_one_line_error(result, "train", (
        "device 'strict:no_x64' cannot run anynet: array-api-strict's no_x64 has no int64, which anynet's class "
        "labels and counts are (as the book's load_mnist gives them); 'strict:no_float64' tests without float64"))
