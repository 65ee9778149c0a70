"""The benchmark runs every contender on the same work: same batches, same weights, same results.

No timing is asserted here (timings belong in docs/performance.md); what is checked is that the comparison is fair.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import benchmarks as benchmark
from anynet import cli
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
    assert caught.value.code == 2 and "takes letters from 'abcd', got 'xz'" in capsys.readouterr().err
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
