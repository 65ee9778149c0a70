"""The benchmark runs every contender on the same work: same batches, same weights, same results.

No timing is asserted here (timings belong in docs/performance.md); what is checked is that the comparison is fair.
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import anynet
import benchmarks as benchmark
from anynet import cli
from benchmarks import conv as book
from benchmarks.contenders import Anynet, BookNumPy, PyTorch
from benchmarks.workloads import disagreements, verdicts
from tests.helpers import blobs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_data():
    x, t = blobs(7000, seed=2)
    return (x[:6000], t[:6000]), (x[6000:], t[6000:])


def test_contenders_learn_the_same_thing(small_data, monkeypatch):
    monkeypatch.setattr(benchmark, "PAUSE_S", 0.0)
    rows = benchmark.run_benchmark("cpu", "abc", repeats=1, seed=0, data=small_data)
    by = {(r["workload"], r["setting"], r["contender"]): r for r in rows}
    names = {r["contender"] for r in rows}
    assert {"anynet", "book NumPy"} <= names
    for workload in "ab":
        setting = "batch 100"
        reference = by[(workload, setting, "book NumPy")]
        for name in names:
            row = by[(workload, setting, name)]
            # Adam's epsilon sits elsewhere in PyTorch, hence the looser bound for it on (b)
            close = 0.02 if (workload, name) == ("b", "PyTorch") else 0.002
            assert row["test_acc"] == pytest.approx(reference["test_acc"], abs=close), (workload, name)
            assert row["train_acc"] == pytest.approx(reference["train_acc"], abs=close), (workload, name)
    if "PyTorch" in names:  # both record the loss before the update (the book's loop measures it after)
        ours, theirs = by[("a", "batch 100", "anynet")], by[("a", "batch 100", "PyTorch")]
        assert ours["final_loss"] == pytest.approx(theirs["final_loss"], rel=1e-3)
    for setting in ("batch 100", "batch 10000"):
        accuracies = [by[("c", setting, name)]["test_acc"] for name in names]
        # inference from the same weights: the same answers (PyTorch reports its mean in float32)
        assert max(accuracies) - min(accuracies) < 1e-6, accuracies
    for row in rows:
        assert row["seconds"] > 0 and row["gflops"] > 0 and len(row["seconds_all"]) == 1
        if row["contender"] == "book NumPy":
            assert row["vs_book_numpy"] == 1.0


@pytest.mark.parametrize("key", ["a", "b"])
def test_the_same_batches_and_weights_as_the_trainer(key, monkeypatch):
    """What the benchmark hands every contender is what anynet's network and Trainer use for that seed."""
    import anynet.trainer
    from anynet.networks import TwoLayerNet
    from anynet.trainer import Trainer

    workload = benchmark.WORKLOADS[key]
    drawn = []
    draw = anynet.trainer.epoch_order
    monkeypatch.setattr(anynet.trainer, "epoch_order", lambda *a: drawn.append(draw(*a)) or drawn[-1])
    x, t = blobs(600)
    trainer = Trainer(TwoLayerNet(784, 4, 10, seed=0), x, t, x, t, epochs=1, mini_batch_size=workload.batch_size,
                      sampling=workload.sampling, seed=4, verbose=False)
    trainer.train_epoch()
    assert len(drawn) == 1 and np.array_equal(drawn[0], workload.batch_order(seed=4, n=600))
    if workload.sampling == "replacement":  # (a): the book's ch.4 loop
        assert len(drawn[0]) == trainer.iter_per_epoch * workload.batch_size == 600
    else:
        assert sorted(drawn[0].tolist()) == list(range(600))

    weights = workload.initial_weights(seed=7)
    network = workload.network(seed=7)
    assert sorted(weights) == sorted(network.params)
    for name, value in network.params.items():
        assert weights[name].dtype == np.float32 and np.array_equal(weights[name], anynet.to_numpy(value)), name
    scale = 0.01 if key == "a" else np.sqrt(2.0 / 784)  # the book's ch.4 init, He for ReLU
    expected = scale * np.random.default_rng(7).standard_normal((784, workload.sizes[1]))
    np.testing.assert_array_equal(weights["W1"], expected.astype(np.float32))


def test_anynet_bench_writes_json(tmp_path, monkeypatch, small_data, capsys):
    monkeypatch.setattr(benchmark, "load_data", lambda data_dir=None: (small_data, "SYNTHETIC (test)"))
    monkeypatch.setattr(benchmark, "PAUSE_S", 0.0)
    gemm_rate = benchmark.gemm_rate
    monkeypatch.setattr(benchmark, "gemm_rate", lambda name: gemm_rate(name, size=256))  # the rate, measured quicker
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--device", "cpu", "--workloads", "c", "--repeats", "1", "--no-torch",
                     "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "data: SYNTHETIC (test)" in printed and "(c) batch 100   anynet" in printed
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["gemm_gflops"] > 0 and report["versions"]["numpy"]
    assert {r["contender"] for r in report["results"]} == {"anynet", "book NumPy"}
    assert report["data"] == "SYNTHETIC (test)"


def test_bench_options_are_the_benchmarks_own(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["bench", "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for option in ("--device", "--workloads", "--repeats", "--seed", "--no-torch", "--json", "--data-dir"):
        assert option in out, option
    with pytest.raises(SystemExit) as caught:
        cli.main(["bench", "--workloads", "xz"])
    assert caught.value.code == 2 and "takes letters from 'abcdef', got 'xz'" in capsys.readouterr().err
    assert cli.main(["bench", "--device", "tpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("anynet bench: error: unknown device 'tpu'") and len(err.strip().splitlines()) == 1


def test_bench_outside_a_source_checkout_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "BENCHMARKS", tmp_path / "benchmarks")  # as in an installed wheel: no such folder
    assert cli.main(["bench", "--device", "cpu", "--repeats", "1"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("anynet bench: error: the benchmark is not installed with the package: it needs a source "
                          "checkout") and "python scripts/benchmark.py" in err


def test_a_broken_or_foreign_benchmarks_folder_affects_only_bench(monkeypatch, tmp_path, capsys):
    """site-packages may hold another project's top-level "benchmarks": it must not break any other command, and
    bench says why it cannot run in one line."""
    foreign = tmp_path / "benchmarks"
    foreign.mkdir()
    (foreign / "__init__.py").write_text("NAME = 'another project'\n")
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.setattr(cli, "CHECKOUT", tmp_path)
    monkeypatch.setattr(cli, "BENCHMARKS", foreign)
    monkeypatch.delitem(sys.modules, "benchmarks", raising=False)
    assert cli.main(["devices"]) == 0
    assert "benchmarks" not in sys.modules  # nothing but bench loads it
    capsys.readouterr()
    assert cli.main(["bench", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "has no add_arguments/run" in err
    (foreign / "__init__.py").write_text("raise RuntimeError('half-written checkout')\n")
    monkeypatch.delitem(sys.modules, "benchmarks", raising=False)
    assert cli.main(["bench"]) == 1
    err = capsys.readouterr().err
    assert "could not be loaded: RuntimeError: half-written checkout" in err and len(err.strip().splitlines()) == 1


def test_the_script_runs_from_a_checkout():
    result = subprocess.run([sys.executable, "scripts/benchmark.py", "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0 and "--workloads" in result.stdout, result.stderr


def test_pytorch_is_a_contender_only_where_it_can_run_on_the_benchmarked_device(small_data, monkeypatch, capsys):
    """A CPU-only PyTorch is no peer for a GPU run: left out with the reason, instead of failing on its first move."""
    import anynet

    monkeypatch.setattr(benchmark, "PAUSE_S", 0.0)
    monkeypatch.setattr(anynet, "available_devices", lambda: ["cpu", "strict"])  # as if PyTorch had no such device
    rows = benchmark.run_benchmark("cpu", "c", repeats=1, seed=0, data=small_data)
    assert {row["contender"] for row in rows} == {"anynet", "book NumPy"}
    printed = capsys.readouterr().out
    assert "PyTorch cannot run on cpu here (torch:cpu is not among anynet.available_devices())" in printed


def test_the_benchmarks_data_dir_is_the_folder_of_the_datasets_folders(tmp_path, capsys, monkeypatch):
    from anynet import datasets

    monkeypatch.delenv("ANYNET_DATA", raising=False)  # nothing to fall back on but the folder given
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "SYSTEM_FOLDER", tmp_path / "system")
    with pytest.raises(SystemExit, match="--data-dir .*missing: no such folder"):
        benchmark.load_data(tmp_path / "missing")
    (tmp_path / "fashion-mnist").mkdir()
    (tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte").write_bytes(b"not the published file")
    _, label = benchmark.load_data(tmp_path)
    assert label == "SYNTHETIC (no Fashion-MNIST or MNIST found)"
    printed = capsys.readouterr().out
    assert "fashion-mnist not used:" in printed and "\nmnist not used:" in printed


@pytest.mark.parametrize("device_name", ["cpu", "strict:device1"])
def test_the_two_ways_of_making_dropout_masks_make_the_same_masks(device_name):
    from anynet import device, to_numpy
    from benchmarks import masks

    where = device(device_name)
    keys = masks._keys(steps=3, layers=2, seed=5)
    made_there, moved = masks.on_device(where, keys, (7, 9)), masks.host_block(where, keys, (7, 9))
    assert len(made_there) == len(moved) == 6
    for one, other in zip(made_there, moved):
        assert to_numpy(one).shape == (7, 9) and np.array_equal(to_numpy(one), to_numpy(other))
    assert 0.7 < np.mean([to_numpy(m).mean() for m in moved]) < 1.0  # RATIO of 0.15 drops about 15%
    result = masks.compare(device_name, steps=4, layers=1, width=8, batch=4, repeats=1)
    assert set(result["seconds"]) == {"device", "host block"} and result["masks"] == 4
    assert masks.report(result).startswith(f"dropout masks on {where.name}: 4 masks of (4, 8)")


# ------------------------------------------------------------------------------------------------------------
# (e) SimpleConvNet training and (f) DeepConvNet inference: anynet, the book's im2col code, PyTorch's nn.Conv2d
# ------------------------------------------------------------------------------------------------------------

TORCH_CPU = "torch:cpu" in anynet.available_devices()


@pytest.fixture(scope="module")
def tiny_images():
    """300 training and 200 test images as flat rows, as load_data gives them: three steps of 100."""
    x, t = blobs(500, seed=3)
    return (x[:300], t[:300]), (x[300:], t[300:])


def _convnet_contenders(workload, data, device_name="cpu", seed=0):
    weights = workload.initial_weights(seed)
    contenders = [Anynet(workload, data, device_name, seed), BookNumPy(workload, data, weights)]
    return contenders + ([PyTorch(workload, data, weights, "cpu")] if TORCH_CPU else [])


@pytest.mark.parametrize("device_name", ["cpu", "torch:cpu"])
def test_the_three_convnets_take_the_same_steps(device_name, tiny_images):
    """Under SGD the three programs compute the same function: from the same weights and batches, the same weights,
    losses and accuracies after three steps (PyTorch's Adam puts its epsilon elsewhere: SGD shows the rest is the
    same, the conv weights' layout, the pooling, the flattening order, the loss)."""
    if device_name not in anynet.available_devices():
        pytest.skip(f"{device_name} is not usable here")
    workload = copy.copy(benchmark.WORKLOADS["e"])
    workload.optimizer, workload.lr = "sgd", 0.1
    initial = workload.initial_weights(seed=0)
    order = workload.batch_order(seed=0, n=300)
    contenders = _convnet_contenders(workload, tiny_images, device_name)
    results = [contender.epoch(order) for contender in contenders]
    trained = [contender.weights() for contender in contenders]
    for name, start in initial.items():
        assert np.abs(trained[0][name] - start).max() > 4e-5, name  # every parameter moved
        for other in trained[1:]:
            np.testing.assert_allclose(other[name], trained[0][name], rtol=0, atol=2e-7, err_msg=name)
    (x, t), (x_test, t_test) = benchmark.WORKLOADS["e"].prepare(tiny_images)
    last = order[200:300]
    # the book measures the loss after the update (common/trainer.py), anynet and PyTorch before it
    after = book.SimpleConvNet({k: v.astype(np.float32) for k, v in trained[0].items()}).loss(x[last], t[last])
    assert results[1][0] == pytest.approx(after, rel=1e-6)
    assert 2.0 < results[0][0] < 2.4 and results[0][0] != pytest.approx(after, rel=1e-5)
    for _, train_acc, test_acc in results[1:]:
        assert train_acc == pytest.approx(results[0][1], abs=1e-6)  # on the first 1000 (here all 300) images
        assert test_acc == pytest.approx(results[0][2], abs=1e-6)  # on the whole test split
    if TORCH_CPU:
        assert results[2][0] == pytest.approx(results[0][0], rel=1e-6)


def test_the_convnet_epoch_with_adam(tiny_images, monkeypatch):
    """Workload (e) as benchmarked: anynet and the book's code stay together step by step (same Adam), PyTorch's
    loss within a thousandth; the rows hold times, ratios and accuracies, and the targets are judged from them."""
    monkeypatch.setattr(benchmark, "PAUSE_S", 0.0)
    workload = benchmark.WORKLOADS["e"]
    order = workload.batch_order(seed=0, n=300)
    contenders = _convnet_contenders(workload, tiny_images)
    results = [contender.epoch(order) for contender in contenders]
    for name, value in contenders[1].weights().items():
        np.testing.assert_allclose(value, contenders[0].weights()[name], rtol=0, atol=1e-6, err_msg=name)
    assert results[1][1:] == pytest.approx(results[0][1:], abs=1e-6)
    if TORCH_CPU:
        assert results[2][0] == pytest.approx(results[0][0], rel=1e-3)

    rows = benchmark.run_benchmark("cpu", "e", repeats=1, seed=0, data=tiny_images)
    by = {row["contender"]: row for row in rows}
    assert set(by) == {"anynet", "book NumPy"} | ({"PyTorch"} if TORCH_CPU else set())
    assert by["anynet"]["test_acc"] == pytest.approx(results[0][2], abs=1e-6)  # the same run as above
    assert by["book NumPy"]["test_acc"] == pytest.approx(results[1][2], abs=1e-6)
    for row in rows:
        assert row["setting"] == "batch 100" and row["seconds"] > 0 and row["gflops"] > 0
        assert row["vs_book_numpy"] == pytest.approx(row["seconds"] / by["book NumPy"]["seconds"])
    judged = verdicts(rows, "cpu")
    ratio = by["anynet"]["vs_book_numpy"]
    assert f"(e) batch 100: anynet / book NumPy = {ratio:.2f} (target <= 0.25): " \
           f"{'met' if ratio <= 0.25 else 'MISSED'}" in judged
    assert len(judged) == (2 if TORCH_CPU else 1)


def test_deep_convnet_inference_from_seeded_weights(tiny_images, monkeypatch):
    monkeypatch.setattr(benchmark, "PAUSE_S", 0.0)
    monkeypatch.delenv("ANYNET_DATA", raising=False)
    workload = benchmark.WORKLOADS["f"]
    assert "seeded He weights on the run's test split" in workload.title
    rows = benchmark.run_benchmark("cpu", "f", repeats=1, seed=0, data=tiny_images)
    accuracies = {row["contender"]: row["test_acc"] for row in rows}
    assert len(accuracies) == (3 if TORCH_CPU else 2) and {row["setting"] for row in rows} == {"batch 100"}
    # untrained: near chance, and the same answers from the same weights
    assert max(accuracies.values()) - min(accuracies.values()) < 1e-6 and max(accuracies.values()) < 0.4
    assert disagreements(rows) == []


BOOK = Path(os.environ.get("ANYNET_DATA", "/nonexistent"))


@pytest.mark.skipif(not (BOOK / "book" / "deep_convnet_params.pkl").is_file()
                    or not (BOOK / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="needs ANYNET_DATA with book/deep_convnet_params.pkl and mnist/ (CI uses ../shared/data)")
def test_deep_convnet_inference_from_the_books_weights(tiny_images, monkeypatch, tmp_path):
    """With the book's trained weights, the three score MNIST's test images (as many as the run's test split)."""
    monkeypatch.setattr(benchmark, "PAUSE_S", 0.0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the parsed MNIST arrays' cache is this test's own
    workload = benchmark.WORKLOADS["f"]
    assert workload.title.endswith("the book's deep_convnet_params.pkl on MNIST's test split")
    (_, _), (x_test, t_test) = workload.prepare(tiny_images)
    assert x_test.shape == (200, 1, 28, 28) and t_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    rows = benchmark.run_benchmark("cpu", "f", repeats=1, seed=0, data=tiny_images)
    accuracies = {row["contender"]: row["test_acc"] for row in rows}
    assert len(accuracies) == (3 if TORCH_CPU else 2)
    assert min(accuracies.values()) >= 0.97 and max(accuracies.values()) - min(accuracies.values()) < 1e-6


def test_the_convnet_workloads_start_from_anynets_network_and_count_its_work():
    e, f = benchmark.WORKLOADS["e"], benchmark.WORKLOADS["f"]
    weights = e.initial_weights(seed=7)
    assert {name: value.shape for name, value in weights.items()} == {
        "W1": (30, 1, 5, 5), "b1": (30,), "W2": (4320, 100), "b2": (100,), "W3": (100, 10), "b3": (10,)}
    expected = 0.01 * np.random.default_rng(7).standard_normal((30, 1, 5, 5))
    np.testing.assert_array_equal(weights["W1"], expected.astype(np.float32))
    assert sorted(e.batch_order(seed=4, n=600).tolist()) == list(range(600))  # shuffled: each image once
    # conv: 2 * 24 * 24 * 30 * 5 * 5; Affine 4320 x 100; Affine 100 x 10
    assert e._layer_flops() == [864000, 864000, 2000]
    assert e.epoch_images(60000) == 60000 + 1000 + 1000 + 10000
    assert e.train_flops(60000) == 60000 * (3 * 1730000 - 864000) + 12000 * 1730000
    # the book's DeepConvNet: 28 -> 28 -> pool 14 -> 14 -> 16 (pad 2) -> pool 8 -> 8 -> 8 -> pool 4; 64 * 4 * 4
    assert f._layer_flops() == [2 * 28 * 28 * 16 * 9, 2 * 28 * 28 * 16 * 16 * 9, 2 * 14 * 14 * 32 * 16 * 9,
                                2 * 16 * 16 * 32 * 32 * 9, 2 * 8 * 8 * 64 * 32 * 9, 2 * 8 * 8 * 64 * 64 * 9,
                                2 * 1024 * 50, 2 * 50 * 10]
    # (a)-(d) count as before: the trained images, then the accuracy of both whole sets
    b = benchmark.WORKLOADS["b"]
    assert b.epoch_images(60000) == 130000
    assert b.train_flops(60000) == 60000 * (3 * 178800 - 156800) + 70000 * 178800


def test_the_report_judges_the_targets_and_flags_accuracies_that_part():
    def row(workload, contender, seconds, acc, vs_pytorch=None, vs_book=None):
        return {"workload": workload, "setting": "batch 100", "contender": contender, "seconds": seconds,
                "test_acc": acc, "vs_pytorch": vs_pytorch, "vs_book_numpy": vs_book}

    rows = [row("e", "anynet", 2.0, 0.871, 0.8, 0.3), row("e", "book NumPy", 6.7, 0.872),
            row("e", "PyTorch", 2.5, 0.885), row("b", "anynet", 1.0, 0.90, 1.2)]
    assert verdicts(rows, "cpu") == ["(e) batch 100: anynet / PyTorch = 0.80 (target <= 1): met",
                                     "(e) batch 100: anynet / book NumPy = 0.30 (target <= 0.25): MISSED"]
    assert verdicts(rows, "cuda") == ["(e) batch 100: anynet / PyTorch = 0.80 (target <= 1): met"]
    assert disagreements(rows) == ["(e) batch 100: the test accuracies differ by more than 0.01: anynet 0.8710, "
                                   "book NumPy 0.8720, PyTorch 0.8850"]
    rows[2]["test_acc"] = 0.879
    assert disagreements(rows) == []


def test_bench_runs_the_convnet_workloads_from_the_command_line(tmp_path, monkeypatch, tiny_images, capsys):
    (x, t), (x_test, t_test) = tiny_images
    one_step = (x[:100], t[:100]), (x_test[:100], t_test[:100])  # the command's path, not the workloads': one step
    monkeypatch.setattr(benchmark, "load_data", lambda data_dir=None: (one_step, "SYNTHETIC (test)"))
    monkeypatch.setattr(benchmark, "PAUSE_S", 0.0)
    monkeypatch.delenv("ANYNET_DATA", raising=False)
    gemm_rate = benchmark.gemm_rate
    monkeypatch.setattr(benchmark, "gemm_rate", lambda name: gemm_rate(name, size=256))
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--device", "cpu", "--workloads", "ef", "--repeats", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "-- (e) SimpleConvNet epoch: conv 30x5x5" in printed and "(e) batch 100   book NumPy" in printed
    assert "-- (f) inference, 10000 test images, DeepConvNet" in printed and "(f) batch 100   anynet" in printed
    report = json.loads(out.read_text())
    assert "targets: CPU anynet <= 1.0 x PyTorch and <= 0.25 x the book" in report["workloads"]["e"]
    names = {"anynet", "book NumPy"} | ({"PyTorch"} if TORCH_CPU else set())
    for key in "ef":
        results = [r for r in report["results"] if r["workload"] == key]
        assert {r["contender"] for r in results} == names
        assert all(0 <= r["test_acc"] <= 1 for r in results)
