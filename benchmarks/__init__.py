"""Side-by-side benchmark: anynet against the book's NumPy code and idiomatic PyTorch, on the same work.

    python scripts/benchmark.py --device cpu          # or: anynet bench --device cuda

Every contender gets the same data, initial weights, hyperparameters and batch indices; each is run once to warm
up, then timed ``--repeats`` times (device-synchronised), and the median is reported with the spread.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import anynet
from anynet.backend import library_versions
from anynet.benchmark.contenders import BookNumPy, PyTorch, Workload, gemm_rate
from anynet.networks import MultiLayerNet
from anynet.trainer import Trainer

WORKLOADS = {
    "a": Workload("a", "book ch.4 epoch: 784-50-10 sigmoid, SGD 0.1, batch 100, 600 steps + accuracy",
                  [784, 50, 10], "sigmoid", "sgd", 0.1, 100, "replacement"),
    "b": Workload("b", "784-100-100-10 ReLU, Adam 1e-3, batch 100, one epoch + accuracy",
                  [784, 100, 100, 10], "relu", "adam", 1e-3, 100, "shuffle"),
    "c": Workload("c", "inference, 10000 test images, 784-100-100-10 ReLU", [784, 100, 100, 10], "relu", "adam",
                  1e-3, 100, "shuffle", inference_batch=(100, 10000)),
    # wide layers, so that the GEMMs are big enough for a GPU to show its throughput
    "d": Workload("d", "784-1024-1024-10 ReLU, Adam 1e-3, batch 4096, one epoch + accuracy",
                  [784, 1024, 1024, 10], "relu", "adam", 1e-3, 4096, "shuffle"),
}


class Anynet:
    """anynet as its users run it: a network and the Trainer, data placed on the device once."""

    name = "anynet"

    def __init__(self, workload, data, weights, device_name, seed):
        self.w, self.seed, self.weights = workload, seed, weights
        self.where = anynet.device(device_name)
        (x, t), (x_test, t_test) = data
        self.data = [self.where.asarray(a) for a in (x, t, x_test, t_test)]
        self.reset()

    def reset(self):
        hidden = self.w.sizes[1:-1]
        self.network = MultiLayerNet(self.w.sizes[0], hidden, self.w.sizes[-1], activation=self.w.activation,
                                     device=self.where).load_params(self.weights)
        self.trainer = Trainer(self.network, *self.data, epochs=1, mini_batch_size=self.w.batch_size,
                               optimizer=self.w.optimizer, optimizer_param={"lr": self.w.lr}, seed=self.seed,
                               sampling=self.w.sampling, verbose=False, progress=False)

    def epoch(self, order):
        self.trainer.train_epoch()  # draws the same order from the same seed
        return self.trainer.train_loss_list[-1], self.trainer.train_acc_list[-1], self.trainer.test_acc_list[-1]

    def infer(self, batch_size):
        return self.network.accuracy(self.data[2], self.data[3], batch_size=batch_size)

    def synchronize(self):
        self.where.synchronize()


def load_data(data_dir=None):
    """Fashion-MNIST (else MNIST) from the usual places, never downloaded; else synthetic data of their shape."""
    for name in ("fashion-mnist", "mnist"):
        try:
            return anynet.load_dataset(name, root=data_dir, download=False), f"{name} (real)"
        except FileNotFoundError:
            continue
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 1, size=(10, 784)).astype(np.float32)
    t = rng.integers(0, 10, size=70000)
    x = np.clip(centres[t] + rng.normal(0, 0.3, size=(70000, 784)).astype(np.float32), 0, 1)
    return ((x[:60000], t[:60000]), (x[60000:], t[60000:])), "SYNTHETIC (no Fashion-MNIST or MNIST found)"


# Between runs: long enough for one library's idle worker threads (OpenMP, OpenBLAS) to stop spinning, so that
# they do not slow down the next contender
PAUSE_S = 0.3


def _timed(contender, run, reset):
    reset()
    contender.synchronize()
    time.sleep(PAUSE_S)
    start = time.perf_counter()
    result = run()
    contender.synchronize()
    return time.perf_counter() - start, result


def _interleaved(entries, repeats):
    """Warm each entry up, then time them in turn, ``repeats`` rounds, the order rotating each round: a slow spell
    of the machine then falls on every contender alike, and none always runs right after the same other one."""
    for entry in entries:
        _timed(*entry)
    seconds = [[] for _ in entries]
    results = [None] * len(entries)
    for round_ in range(repeats):
        for k in range(len(entries)):
            i = (k + round_) % len(entries)
            elapsed, results[i] = _timed(*entries[i])
            seconds[i].append(elapsed)
    return seconds, results


def run_benchmark(device_name, workloads, repeats, seed, data, with_torch=True):
    (x, t), _ = data
    where = anynet.device(device_name)
    makers = [("anynet", lambda w, weights: Anynet(w, data, weights, device_name, seed))]
    if where.library in ("numpy", "strict"):
        makers.append(("book NumPy", lambda w, weights: BookNumPy(w, data, weights)))
    # PyTorch on the same hardware: the host for NumPy and strict, the same GPU for CuPy
    torch_device = {"cupy": f"cuda:{where.name.rsplit(':', 1)[-1]}",
                    "torch": where.name.removeprefix("torch:")}.get(where.library, "cpu")
    if with_torch:
        try:
            import torch  # noqa: F401

            makers.append(("PyTorch", lambda w, weights: PyTorch(w, data, weights, torch_device)))
        except ImportError:
            print("PyTorch is not installed: no PyTorch contender")
    rows = []
    for key in workloads:
        w = WORKLOADS[key]
        weights = w.initial_weights(seed)
        order = w.batch_order(seed, x.shape[0])
        contenders = [(name, make(w, weights), make) for name, make in makers]
        if w.inference_batch:
            for batch in w.inference_batch:
                entries = [(c, lambda c=c: c.infer(batch), lambda: None) for _, c, _ in contenders]
                seconds, results = _interleaved(entries, repeats)
                for (name, _, _), took, accuracy in zip(contenders, seconds, results):
                    rows.append(_row(w, name, took, 10000, w.inference_flops(10000), None, None, accuracy,
                                     f"batch {batch}"))
        else:
            entries = []
            for name, contender, make in contenders:
                # each timed epoch starts from the same weights and optimizer state
                reset = contender.reset if name == "anynet" else \
                    lambda c=contender, make=make: c.__dict__.update(make(w, weights).__dict__)
                entries.append((contender, lambda c=contender: c.epoch(order), reset))
            seconds, results = _interleaved(entries, repeats)
            images = w.steps(x.shape[0]) * w.batch_size + x.shape[0] + 10000
            for (name, _, _), took, (loss, train_acc, test_acc) in zip(contenders, seconds, results):
                rows.append(_row(w, name, took, images, w.train_flops(x.shape[0]), loss, train_acc, test_acc,
                                 f"batch {w.batch_size}"))
        del contenders
    _add_ratios(rows)
    return rows


def _row(w, name, seconds, images, flops, loss, train_acc, test_acc, setting):
    median = statistics.median(seconds)
    return {"workload": w.key, "setting": setting, "contender": name, "seconds": median,
            "seconds_all": seconds, "images_per_s": images / median, "gflops": flops / median / 1e9,
            "final_loss": loss, "train_acc": train_acc, "test_acc": test_acc}


def _add_ratios(rows):
    for row in rows:
        peers = {r["contender"]: r["seconds"] for r in rows
                 if r["workload"] == row["workload"] and r["setting"] == row["setting"]}
        row["vs_pytorch"] = row["seconds"] / peers["PyTorch"] if "PyTorch" in peers else None
        row["vs_book_numpy"] = row["seconds"] / peers["book NumPy"] if "book NumPy" in peers else None


def _format_row(row, gemm=None):
    spread = f"{min(row['seconds_all']):.3f}-{max(row['seconds_all']):.3f}"
    ratio = lambda v: f"{v:6.2f}" if v is not None else f"{'-':>6}"  # noqa: E731
    share = f"{100 * row['gflops'] / gemm:5.1f}%" if gemm else ""
    acc = f"{row['test_acc']:.4f}" if row["test_acc"] is not None else "-"
    return (f"({row['workload']}) {row['setting']:<11} {row['contender']:<11} {row['seconds']:8.4f} s "
            f"[{spread}] {row['images_per_s']:>11,.0f} img/s  {ratio(row.get('vs_pytorch'))} "
            f"{ratio(row.get('vs_book_numpy'))}  {row['gflops']:7.1f} GFLOP/s {share:>6}  acc {acc}")


def hardware(device_name):
    info = {"machine": platform.machine(), "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
        info["cpu"] = names[0] if names else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    where = anynet.device(device_name)
    if where.library == "cupy":
        import cupy

        info["gpu"] = cupy.cuda.runtime.getDeviceProperties(where.native.id)["name"].decode()
    elif where.name.startswith("torch:cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(where.native)
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="anynet bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="anynet's device: cpu, cuda, torch:cuda, ... (default cpu)")
    parser.add_argument("--workloads", default="abcd", help="which of a, b, c, d (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per contender after one warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--json", default=None, metavar="FILE", help="where to write the results "
                        "(default: benchmark-<device>.json in the current folder)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown or args.repeats < 1:
        parser.error(f"--workloads takes letters from 'abcd' (got {args.workloads!r}); --repeats at least 1")
    try:
        where = anynet.device(args.device)
    except ValueError as error:
        print(f"anynet bench: error: {error}", file=sys.stderr)
        return 1
    data, data_label = load_data(args.data_dir)
    gemm = gemm_rate(where.name)
    print(f"anynet {anynet.__version__} benchmark on {where.name}; data: {data_label}")
    print(f"hardware: {hardware(where.name)}")
    print(f"measured float32 GEMM rate (4096^3 matmul, best of 3, {where.xp.__name__}): {gemm:.1f} GFLOP/s")
    print(f"each row: median of {args.repeats} runs after a warm-up [fastest-slowest], the contenders taking turns; "
          "ratios are time / peer's time")
    print(f"{'':<4}{'setting':<12}{'contender':<12}{'seconds':>10} {'[spread]':<16}{'images/s':>12}  "
          f"{'/torch':>6} {'/book':>6}  {'GFLOP/s':>7} {'%GEMM':>14}")
    rows = run_benchmark(where.name, args.workloads, args.repeats, args.seed, data, not args.no_torch)
    for key in args.workloads:
        print(f"-- ({key}) {WORKLOADS[key].title}")
        for row in rows:
            if row["workload"] == key:
                row["gemm_fraction"] = row["gflops"] / gemm
                print(_format_row(row, gemm))
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "device": where.name, "data": data_label, "repeats": args.repeats, "seed": args.seed,
        "gemm_gflops": gemm, "hardware": hardware(where.name), "versions": library_versions(),
        "anynet": anynet.__version__,
        "workloads": {k: WORKLOADS[k].title for k in args.workloads}, "results": rows,
    }
    path = Path(args.json or f"benchmark-{where.name.replace(':', '-')}.json")
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0
