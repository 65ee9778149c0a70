"""The benchmark runs every contender on the same work: same batches, same weights, same results.

No timing is asserted here (timings belong in docs/performance.md); what is checked is that the comparison is fair.
"""

import json

import numpy as np
import pytest

from anynet import benchmark, cli
from tests.test_trainer import blobs


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


def test_the_same_batches_as_the_trainer():
    workload = benchmark.WORKLOADS["a"]
    order = workload.batch_order(seed=4, n=6000)
    from anynet.networks import TwoLayerNet
    from anynet.trainer import Trainer

    x, t = blobs(6000)
    trainer = Trainer(TwoLayerNet(784, 4, 10, seed=0), x, t, x, t, mini_batch_size=100, sampling="replacement",
                      seed=4, verbose=False)
    assert np.array_equal(trainer._epoch_order(), order)


def test_anynet_bench_writes_json(tmp_path, monkeypatch, small_data, capsys):
    monkeypatch.setattr(benchmark, "load_data", lambda data_dir=None: (small_data, "SYNTHETIC (test)"))
    monkeypatch.setattr(benchmark, "PAUSE_S", 0.0)
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--device", "cpu", "--workloads", "c", "--repeats", "1", "--no-torch",
                     "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "data: SYNTHETIC (test)" in printed and "(c) batch 100   anynet" in printed
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["gemm_gflops"] > 0 and report["versions"]["numpy"]
    assert {r["contender"] for r in report["results"]} == {"anynet", "book NumPy"}
    assert report["data"] == "SYNTHETIC (test)"
