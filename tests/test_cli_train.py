"""`anynet train` and `anynet evaluate`, on synthetic data standing in for the datasets."""

import numpy as np
import pytest

from anynet import cli, datasets
from anynet.io import read_metadata, save_params
from tests.helpers import blobs


@pytest.fixture
def synthetic(monkeypatch):
    x, t = blobs(2500, seed=4)
    calls = []

    def fake_load(name, *args, split=None, data_dir=None, **options):
        calls.append((name, split, data_dir))
        train, test = (x[:2000], t[:2000]), (x[2000:], t[2000:])
        return test if split == "test" else train if split == "train" else (train, test)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    return calls


def test_train_save_evaluate(synthetic, tmp_path, capsys):
    model = tmp_path / "model.npz"
    code = cli.main(["train", "--dataset", "fashion-mnist", "--epochs", "2", "--hidden", "32", "16", "--device", "cpu",
                     "--save", str(model), "--checkpoint", str(tmp_path / "ckpt.npz"), "--data-dir", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "device: cpu\n" in out and "model: mlp 784-32-16-10, relu" in out
    assert "training on cpu: 20 steps per epoch of 100, 2 epochs, Adam" in out
    final = float(out.split("final test accuracy: ")[1].split()[0])
    assert final > 0.9 and synthetic == [("fashion-mnist", None, str(tmp_path))]
    meta = read_metadata(model)
    assert meta == {"architecture": {"sizes": [784, 32, 16, 10], "activation": "relu"}, "dataset": "fashion-mnist",
                    "preprocessing": {"normalize": True, "flatten": True, "one_hot_label": False},
                    "test_accuracy": meta["test_accuracy"]}
    assert meta["test_accuracy"] == pytest.approx(final, abs=1e-4)
    assert read_metadata(tmp_path / "ckpt.npz")["epoch"] == 2

    # the dataset is the one the file records: no --dataset needed
    argv = ["evaluate", "--weights", str(model), "--device", "strict:device1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert synthetic[-1] == ("fashion-mnist", "test", None)
    assert "data: fashion-mnist test split, normalized to [0, 1]\n" in out
    assert f"accuracy: {final:.4f} ({round(final * 500)} of 500 fashion-mnist test images)" in out
    assert "  0  T-shirt/top" in out and "confusion matrix (rows: true class, columns: predicted class):" in out
    rows = [line.split()[1:] for line in out.splitlines()[-10:]]
    assert sum(int(row[i]) for i, row in enumerate(rows)) == round(final * 500)
    assert sum(int(v) for row in rows for v in row) == 500


def test_evaluate_takes_the_books_sigmoid_pickle(synthetic, tmp_path, capsys):
    import pickle

    rng = np.random.default_rng(0)
    weights = {"W1": rng.normal(0, 0.1, (784, 50)), "b1": np.zeros(50), "W2": rng.normal(0, 0.1, (50, 100)),
               "b2": np.zeros(100), "W3": rng.normal(0, 0.1, (100, 10)), "b3": np.zeros(10)}
    weights = {k: v.astype(np.float32) for k, v in weights.items()}
    path = tmp_path / "sample_weight.pkl"
    path.write_bytes(pickle.dumps(weights, protocol=3))
    assert cli.main(["evaluate", "--weights", str(path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "model: 784-50-100-10 sigmoid" in out

    x, t = blobs(2500, seed=4)
    x, t = x[2000:], t[2000:]

    def sigmoid(a):
        return 1 / (1 + np.exp(-a))

    scores = sigmoid(sigmoid(x @ weights["W1"]) @ weights["W2"]) @ weights["W3"]
    expected = int((scores.argmax(axis=1) == t).sum())
    assert f"({expected} of 500 mnist test images)" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--resume", "/nonexistent/ckpt.npz"], "--resume /nonexistent/ckpt.npz: no such checkpoint file"),
        (["train", "--save", "/nonexistent/dir/m.npz"], "--save /nonexistent/dir/m.npz: the folder /nonexistent/dir "
                                                        "does not exist"),
        (["train", "--model", "two-layer", "--hidden", "10", "20"], "--model two-layer takes one --hidden size"),
        (["train", "--epochs", "0"], "--epochs and --batch-size must be at least 1"),
        (["train", "--device", "tpu"], "unknown device 'tpu'"),
        (["train", "--device", "cpu", "--lr", "-1"], "--lr -1.0: expected a finite number > 0"),
        (["train", "--device", "cpu", "--weight-decay", "nan"], "--weight-decay nan: expected a finite number >= 0"),
        (["evaluate", "--weights", "/nonexistent.npz"], "--weights /nonexistent.npz: no such file"),
    ],
)
def test_user_errors_are_one_line_without_a_traceback(synthetic, argv, message, capsys):
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"anynet {argv[0]}: error: ") and message in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert "training on" not in captured.out  # failed before any training


def test_a_missing_plotting_library_fails_before_training(synthetic, monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main(["train", "--plot", str(tmp_path / "c.png")]) == 1
    captured = capsys.readouterr()
    assert 'pip install "anynet[plot]"' in captured.err and "training on" not in captured.out


def test_train_plots_and_evaluate_plots(synthetic, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    model = tmp_path / "two.npz"
    open_before = plt.get_fignums()
    assert cli.main(["train", "--model", "two-layer", "--hidden", "20", "--activation", "sigmoid", "--optimizer",
                     "sgd", "--lr", "0.5", "--epochs", "1", "--device", "cpu", "--save", str(model),
                     "--plot", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 5000
    assert read_metadata(model)["architecture"] == {"sizes": [784, 20, 10], "activation": "sigmoid"}
    assert cli.main(["evaluate", "--weights", str(model), "--device", "cpu", "--plot", str(tmp_path / "w.png")]) == 0
    assert "saved misclassified test images to" in capsys.readouterr().out
    assert plt.get_fignums() == open_before  # the saved figures are closed: none piles up in a long session


def test_evaluate_refuses_weights_of_another_shape(synthetic, tmp_path, capsys):
    path = save_params(tmp_path / "small.npz", {"W1": np.zeros((20, 5), np.float32), "b1": np.zeros(5, np.float32),
                                                "W2": np.zeros((5, 3), np.float32), "b2": np.zeros(3, np.float32)},
                       metadata={"architecture": {"sizes": [20, 5, 3], "activation": "relu"}, "dataset": "mnist"})
    assert cli.main(["evaluate", "--weights", str(path), "--device", "cpu"]) == 1
    assert "a 20-5-3 network cannot classify mnist (784 inputs, 10 classes)" in capsys.readouterr().err


def test_a_failing_final_write_names_the_target_not_the_temporary_file(synthetic, tmp_path, monkeypatch, capsys):
    model, checkpoint = tmp_path / "model.npz", tmp_path / "ckpt.npz"
    real_savez = np.savez

    def full_disk(sink, **arrays):
        if "W1" in arrays:  # the weights; the checkpoint's arrays are named param/W1, ...
            raise OSError(28, "No space left on device")
        real_savez(sink, **arrays)

    monkeypatch.setattr(np, "savez", full_disk)
    argv = ["train", "--epochs", "1", "--hidden", "8", "--device", "cpu", "--save", str(model), "--checkpoint",
            str(checkpoint)]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "final test accuracy" in captured.out
    assert captured.err == (f"anynet train: error: --save {model}: could not write the weights: No space left on "
                            f"device; the checkpoint {checkpoint} holds the same weights\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]  # no temporary file left behind


def test_evaluate_refuses_an_empty_test_set(synthetic, tmp_path, monkeypatch, capsys):
    from anynet.networks import MultiLayerNet

    def no_images(name, *args, split=None, **options):
        return np.zeros((0, 784), np.float32), np.zeros(0, np.int64)

    monkeypatch.setattr(datasets, "load_dataset", no_images)
    path = save_params(tmp_path / "m.npz", MultiLayerNet(784, [8], 10, seed=0), metadata={"dataset": "mnist"})
    assert cli.main(["evaluate", "--weights", str(path), "--device", "cpu"]) == 1
    assert capsys.readouterr().err == "anynet evaluate: error: the mnist test split holds no images: nothing to " \
                                      "evaluate\n"


def test_a_failing_checkpoint_write_names_the_checkpoint(synthetic, tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "ckpt.npz"

    def full_disk(sink, **arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    argv = ["train", "--epochs", "2", "--hidden", "8", "--device", "cpu", "--checkpoint", str(checkpoint)]
    assert cli.main(argv) == 1
    assert capsys.readouterr().err == (f"anynet train: error: --checkpoint {checkpoint}: could not write it after "
                                       "epoch 1: No space left on device\n")
    assert list(tmp_path.iterdir()) == []


# -- mlp-extend: the book's MultiLayerNetExtend, with batch norm and dropout ------------------------------------------


def test_mlp_extend_with_batch_norm_and_dropout_trains_saves_and_evaluates(synthetic, tmp_path, capsys):
    from anynet.io import load_params

    model = tmp_path / "extend.npz"
    argv = ["train", "--model", "mlp-extend", "--batchnorm", "--dropout", "0.15", "--hidden", "32", "16", "--epochs",
            "2", "--device", "cpu", "--save", str(model)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "model: mlp-extend 784-32-16-10, relu, batch norm, dropout 0.15\n" in out
    final = float(out.split("final test accuracy: ")[1].split()[0])
    assert final > 0.8  # 40 steps
    architecture = {"sizes": [784, 32, 16, 10], "activation": "relu", "model": "mlp-extend", "use_batchnorm": True,
                    "use_dropout": True, "dropout_ration": 0.15}
    assert read_metadata(model)["architecture"] == architecture
    saved = load_params(model)
    assert sorted(name for name in saved if name.startswith("running_")) == [
        "running_mean1", "running_mean2", "running_var1", "running_var2"]
    assert all(float(np.abs(saved[name]).max()) > 0 for name in saved if name.startswith("running_"))  # trained

    for where in ("cpu", "strict:device1"):
        assert cli.main(["evaluate", "--weights", str(model), "--device", where]) == 0
        out = capsys.readouterr().out
        assert f"model: mlp-extend 784-32-16-10 relu, batch norm, dropout 0.15, from {model}\n" in out
        assert f"accuracy: {final:.4f} ({round(final * 500)} of 500 mnist test images)\n" in out


def test_mlp_extend_evaluates_with_its_recorded_layers_only(synthetic, tmp_path, capsys):
    """Each of batch norm and dropout alone, and neither: evaluate rebuilds what the file records and scores it as
    the trained network did (dropout's test-time scale included)."""
    for options, shown in (([], ""), (["--batchnorm"], ", batch norm"), (["--dropout", "0.5"], ", dropout 0.5")):
        model = tmp_path / f"extend{len(shown)}.npz"
        assert cli.main(["train", "--model", "mlp-extend", *options, "--hidden", "16", "--epochs", "1", "--device",
                         "cpu", "--save", str(model)]) == 0
        out = capsys.readouterr().out
        assert f"model: mlp-extend 784-16-10, relu{shown}\n" in out
        final = float(out.split("final test accuracy: ")[1].split()[0])
        assert cli.main(["evaluate", "--weights", str(model), "--device", "cpu"]) == 0
        out = capsys.readouterr().out
        assert f"model: mlp-extend 784-16-10 relu{shown}, from {model}\n" in out
        assert f"({round(final * 500)} of 500 mnist test images)" in out


def test_mlp_extend_resumes_from_its_checkpoint_to_the_same_weights(synthetic, tmp_path, capsys):
    from anynet.io import load_params

    common = ["train", "--model", "mlp-extend", "--batchnorm", "--dropout", "0.2", "--hidden", "16", "--device", "cpu"]
    assert cli.main([*common, "--epochs", "2", "--save", str(tmp_path / "straight.npz")]) == 0
    assert cli.main([*common, "--epochs", "1", "--checkpoint", str(tmp_path / "ckpt.npz")]) == 0
    assert cli.main([*common, "--epochs", "2", "--resume", str(tmp_path / "ckpt.npz"),
                     "--save", str(tmp_path / "resumed.npz")]) == 0
    straight, resumed = load_params(tmp_path / "straight.npz"), load_params(tmp_path / "resumed.npz")
    assert sorted(straight) == sorted(resumed) and "running_var1" in straight
    for name, value in straight.items():
        assert np.array_equal(resumed[name], value), name
    # the checkpoint records the layers: resuming it without them is refused, naming both networks
    capsys.readouterr()
    assert cli.main(["train", "--model", "mlp-extend", "--dropout", "0.2", "--hidden", "16", "--device", "cpu",
                     "--epochs", "2", "--resume", str(tmp_path / "ckpt.npz")]) == 1
    err = capsys.readouterr().err
    assert "cannot resume this run from it: network {" in err and "'use_batchnorm': False" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--batchnorm"], "--batchnorm: --model mlp has no such layers; use --model mlp-extend (the book's "
                                   "MultiLayerNetExtend), which takes --batchnorm and --dropout"),
        (["train", "--model", "two-layer", "--hidden", "10", "--dropout", "0.2"],
         "--dropout: --model two-layer has no such layers; use --model mlp-extend (the book's MultiLayerNetExtend), "
         "which takes --batchnorm and --dropout"),
        (["train", "--model", "mlp-extend", "--dropout", "1"],
         "--dropout 1.0: expected a ratio in [0, 1), the fraction of hidden units dropped at train time (the book "
         "uses 0.15 to 0.5)"),
        (["train", "--model", "mlp-extend", "--dropout", "-0.1"], "--dropout -0.1: expected a ratio in [0, 1)"),
        (["train", "--model", "mlp-extend", "--dropout", "nan"], "--dropout nan: expected a ratio in [0, 1)"),
    ],
)
def test_batch_norm_and_dropout_options_are_refused_where_they_do_not_apply(synthetic, argv, message, capsys):
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("anynet train: error: ") and message in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert captured.out == "" and synthetic == []  # refused before the device is chosen or the data loads


def test_train_help_shows_the_new_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "{mlp,two-layer,mlp-extend,cnn,deep-cnn}" in out
    assert "--batchnorm batch normalization after each hidden layer's Affine (mlp-extend only)" in out
    assert "--dropout RATIO dropout after each hidden layer's activation, dropping RATIO of its units at train time, " \
           "in [0, 1), e.g. 0.15 (mlp-extend only)" in out
