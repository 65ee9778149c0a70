"""The book's Trainer (chapter 6) with a device switch, seeded batches, checkpoints and resume.

The training data is moved onto the device once when it fits in half of the device's free memory (else batch by
batch); batch orders come from a seeded host generator, so every device sees the same batches; each step's loss
stays on the device and is read once per epoch.
"""

from __future__ import annotations

import math
import sys
import time

from .backend import Device, device as make_device, host_generator, namespace, to_numpy
from .io import load_params, read_metadata, save_params
from ._kernels import fused_step
from ._progress import progress_bar
from .optimizers import Optimizer, make_optimizer

__all__ = ["Trainer", "TrainingDivergedError"]

SAMPLINGS = ("shuffle", "replacement")


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite."""


class Trainer:
    """Train ``network`` on (x_train, t_train), measuring accuracy on both sets after each epoch.

    The book's arguments, plus:
    device: where to train (default: where the network is); the network, its optimizer state and the data go there.
    seed: seeds the host generator of batch orders. sampling: "shuffle" (each sample once per epoch) or
    "replacement" (the book's ch.4 loop: each batch drawn independently). checkpoint: a path written after every
    epoch (atomically). resume: a checkpoint to continue from. progress: a tqdm bar per epoch (None: when verbose
    and stderr is a terminal). fast_path: use the library-specific fused step of anynet._kernels where there is
    one (False: always the generic array-API path; the results agree to rounding).
    History: ``train_loss_list`` (per step), ``train_acc_list`` and ``test_acc_list`` (per epoch).
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs: int = 20, mini_batch_size: int = 100,
                 optimizer: "str | Optimizer" = "SGD", optimizer_param: "dict | None" = None,
                 evaluate_sample_num_per_epoch: "int | None" = None, verbose: bool = True, *,
                 device: "str | Device | None" = None, seed: "int | None" = None, sampling: str = "shuffle",
                 checkpoint: "str | None" = None, resume: "str | None" = None, progress: "bool | None" = None,
                 fast_path: bool = True):
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        if not isinstance(mini_batch_size, int) or mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be a positive integer, got {mini_batch_size!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {sampling!r}: expected 'shuffle' or 'replacement'")
        self.network = network
        self.where = make_device(device) if device is not None else network.device
        if network.device != self.where:
            network.to(self.where)
        self.epochs = epochs
        self.batch_size = mini_batch_size
        self.sampling = sampling
        self.seed = seed
        self.verbose = verbose
        self.progress = progress
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.optimizer = make_optimizer(optimizer, {"lr": 0.01} if optimizer_param is None else optimizer_param)
        self.checkpoint = checkpoint
        self.fast_path = fast_path
        self._fused = None

        self.train_size = _check_data("training", x_train, t_train, network)
        _check_data("test", x_test, t_test, network)
        self._dtype = network.params["W1"].dtype
        self.resident = self._fits(x_train, t_train, x_test, t_test)
        self.x_train, self.t_train = self._place(x_train, t_train)
        self.x_test, self.t_test = self._place(x_test, t_test)
        self.iter_per_epoch = (math.ceil(self.train_size / mini_batch_size) if sampling == "shuffle"
                               else max(self.train_size // mini_batch_size, 1))
        self.max_iter = epochs * self.iter_per_epoch

        self.rng = host_generator(seed)
        self.current_epoch = 0
        self.current_iter = 0
        self.train_loss_list: list[float] = []
        self.train_acc_list: list[float] = []
        self.test_acc_list: list[float] = []
        self.epoch_seconds: list[float] = []
        self.final_test_accuracy: "float | None" = None
        if resume is not None:
            self._resume(resume)

    # -- data placement --------------------------------------------------------------------------------------

    def _fits(self, *arrays) -> bool:
        free = self.where.free_memory()
        if free is None:
            return True
        needed = sum(math.prod(a.shape) * 4 for a in arrays)  # as float32 / int32-sized at least
        return needed <= free // 2

    def _place(self, x, t):
        """Data on the device (once) when it fits, else left on the host and moved batch by batch."""
        if self.resident:
            return self.where.asarray(x, dtype=self._dtype), self.where.asarray(t)
        return to_numpy(x), to_numpy(t)  # on the host once; each batch is then sliced there and moved

    def _batch(self, x, t, indices_device, indices_host, start, stop):
        if self.resident:
            xp = self.where.xp
            chosen = indices_device[start:stop]
            return xp.take(x, chosen, axis=0), xp.take(t, chosen, axis=0)
        chosen = indices_host[start:stop]
        return self.where.asarray(x[chosen], dtype=self._dtype), self.where.asarray(t[chosen])

    def _epoch_order(self):
        """This epoch's sample indices, drawn on the host from the seeded generator."""
        if self.sampling == "shuffle":
            return self.rng.permutation(self.train_size)
        return self.rng.integers(0, self.train_size, size=self.iter_per_epoch * self.batch_size)

    # -- training --------------------------------------------------------------------------------------------

    def train_epoch(self) -> float:
        """One epoch of steps; returns its mean loss. Raises TrainingDivergedError on a NaN/inf loss."""
        started = time.perf_counter()
        order = self._epoch_order()
        order_device = self.where.asarray(order) if self.resident else None
        losses = []
        epoch = self.current_epoch + 1
        show = self.progress if self.progress is not None else self.verbose and sys.stderr.isatty()
        with progress_bar(show, total=self.iter_per_epoch, desc=f"epoch {epoch}/{self.epochs}", unit="step",
                          leave=False) as bar:
            fused = self._fused_step()
            for step in range(self.iter_per_epoch):
                start = step * self.batch_size
                stop = min(start + self.batch_size, len(order))
                if fused is not None and self.resident:  # the fast path gathers its batch itself
                    losses.append(fused(self.x_train, self.t_train, order_device[start:stop]))
                else:
                    x_batch, t_batch = self._batch(self.x_train, self.t_train, order_device, order, start, stop)
                    if fused is not None:
                        losses.append(fused(x_batch, t_batch))
                    else:
                        grads = self.network.gradient(x_batch, t_batch)
                        self.optimizer.update(self.network.params, grads)
                        losses.append(self.network.last_loss)
                bar.update(1)
            # the one read of the epoch's losses: no host synchronisation inside a step
            values = to_numpy(namespace(losses[0]).stack(losses)).tolist()
            self._check_finite(values, epoch)
            self.current_iter += self.iter_per_epoch
            self.current_epoch = epoch
            self.train_loss_list += values
            train_acc, test_acc = self._evaluate()
            self.train_acc_list.append(train_acc)
            self.test_acc_list.append(test_acc)
            self.epoch_seconds.append(time.perf_counter() - started)
            bar.set_postfix_str(f"loss {sum(values) / len(values):.4f}, train acc {train_acc:.4f}, "
                                f"test acc {test_acc:.4f}")
        if self.checkpoint is not None:
            self.save_checkpoint(self.checkpoint)
        return sum(values) / len(values)

    def _fused_step(self):
        if self.fast_path and self._fused is None:
            self._fused = fused_step(self.network, self.optimizer) or False
        return self._fused or None

    def _check_finite(self, values: list, epoch: int) -> None:
        for step, value in enumerate(values, 1):
            if not math.isfinite(value):
                raise TrainingDivergedError(
                    f"the loss became {value} at epoch {epoch}, step {step} of {self.iter_per_epoch} "
                    f"(step {self.current_iter + step} overall); lower the learning rate "
                    f"(it is {self.optimizer.lr:g})"
                )

    def _evaluate(self) -> tuple[float, float]:
        n = self.evaluate_sample_num_per_epoch
        x_train, t_train, x_test, t_test = self.x_train, self.t_train, self.x_test, self.t_test
        if n is not None:
            x_train, t_train = x_train[:min(n, x_train.shape[0]), ...], t_train[:min(n, t_train.shape[0]), ...]
            x_test, t_test = x_test[:min(n, x_test.shape[0]), ...], t_test[:min(n, t_test.shape[0]), ...]
        return self.network.accuracy(x_train, t_train), self.network.accuracy(x_test, t_test)

    def train(self) -> dict:
        """Train for the remaining epochs, then measure the final test accuracy; returns the history."""
        if self.verbose:
            print(f"training on {self.where.name}: {self.iter_per_epoch} steps per epoch of {self.batch_size}, "
                  f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}, {type(self.optimizer).__name__}"
                  + ("" if self.resident else " (data moved batch by batch: it does not fit on the device)"))
            print(f"{'epoch':>7} {'loss':>8} {'train acc':>10} {'test acc':>9} {'seconds':>8}")
            for epoch in range(self.current_epoch):  # what a resumed run had done already
                self._print_row(epoch)
        while self.current_epoch < self.epochs:
            self.train_epoch()
            if self.verbose:
                self._print_row(self.current_epoch - 1)
        self.final_test_accuracy = self.network.accuracy(self.x_test, self.t_test)
        if self.verbose:
            print(f"final test accuracy: {self.final_test_accuracy:.4f}")
        return self.history()

    def _print_row(self, epoch: int) -> None:
        steps = self.train_loss_list[epoch * self.iter_per_epoch:(epoch + 1) * self.iter_per_epoch]
        seconds = f"{self.epoch_seconds[epoch]:8.2f}" if epoch < len(self.epoch_seconds) else f"{'-':>8}"
        print(f"{epoch + 1:>3}/{self.epochs:<3} {sum(steps) / max(len(steps), 1):8.4f} "
              f"{self.train_acc_list[epoch]:10.4f} {self.test_acc_list[epoch]:9.4f} {seconds}", flush=True)

    def history(self) -> dict:
        return {"train_loss_list": list(self.train_loss_list), "train_acc_list": list(self.train_acc_list),
                "test_acc_list": list(self.test_acc_list), "epoch_seconds": list(self.epoch_seconds),
                "iter_per_epoch": self.iter_per_epoch, "final_test_accuracy": self.final_test_accuracy}

    # -- checkpoints -----------------------------------------------------------------------------------------

    def save_checkpoint(self, path) -> None:
        """Parameters, optimizer state, generator state, epoch and history, in one atomically written .npz."""
        optimizer_state = self.optimizer.state_dict()
        arrays = {f"param/{k}": v for k, v in self.network.params.items()}
        arrays.update({f"optimizer/{k}": v for k, v in optimizer_state["arrays"].items()})
        metadata = {
            "kind": "anynet-checkpoint",
            "epoch": self.current_epoch,
            "iter": self.current_iter,
            "architecture": self.network.architecture(),
            "optimizer": {"name": type(self.optimizer).__name__, "iter": optimizer_state["iter"],
                          "hyperparameters": self.optimizer.hyperparameters()},
            "batch_size": self.batch_size,
            "sampling": self.sampling,
            "rng": self.rng.bit_generator.state,
            "history": {"train_loss_list": self.train_loss_list, "train_acc_list": self.train_acc_list,
                        "test_acc_list": self.test_acc_list, "epoch_seconds": self.epoch_seconds},
        }
        save_params(path, arrays, metadata=metadata)

    def _resume(self, path) -> None:
        metadata = read_metadata(path)
        if metadata.get("kind") != "anynet-checkpoint":
            raise ValueError(f"{path}: not a checkpoint written by anynet's Trainer (checkpoint=PATH writes one)")
        mismatches = []
        if metadata["architecture"] != self.network.architecture():
            mismatches.append(f"network {metadata['architecture']} vs {self.network.architecture()}")
        if metadata["optimizer"]["name"] != type(self.optimizer).__name__:
            mismatches.append(f"optimizer {metadata['optimizer']['name']} vs {type(self.optimizer).__name__}")
        if metadata["batch_size"] != self.batch_size or metadata["sampling"] != self.sampling:
            mismatches.append(f"batches of {metadata['batch_size']} by {metadata['sampling']} vs "
                              f"{self.batch_size} by {self.sampling}")
        if mismatches:
            raise ValueError(f"{path}: cannot resume this run from it: " + "; ".join(mismatches)
                             + ". Resume with the settings the checkpoint was made with.")
        saved = load_params(path, device=self.where)
        self.network.load_params({k[len("param/"):]: v for k, v in saved.items() if k.startswith("param/")})
        self.optimizer.load_state_dict({"iter": metadata["optimizer"]["iter"],
                                        "arrays": {k[len("optimizer/"):]: v for k, v in saved.items()
                                                   if k.startswith("optimizer/")}}, self.where)
        self.rng.bit_generator.state = metadata["rng"]
        self.current_epoch = metadata["epoch"]
        self.current_iter = metadata["iter"]
        history = metadata["history"]
        self.train_loss_list = list(history["train_loss_list"])
        self.train_acc_list = list(history["train_acc_list"])
        self.test_acc_list = list(history["test_acc_list"])
        self.epoch_seconds = list(history["epoch_seconds"])


def _check_data(which: str, x, t, network) -> int:
    """Clear errors, before the first step, for data that cannot train ``network``."""
    n = x.shape[0]
    if t.shape[0] != n:
        raise ValueError(f"{which} data: {n} samples in x but {t.shape[0]} labels in t; they must match")
    features = math.prod(x.shape[1:])
    if features != network.input_size:
        raise ValueError(f"{which} data: {features} features per sample (x of shape {tuple(x.shape)}), the network "
                         f"takes {network.input_size}")
    classes = network.output_size
    labels = to_numpy(t)
    if labels.ndim == 2:
        if labels.shape[1] != classes:
            raise ValueError(f"{which} data: one-hot labels of width {labels.shape[1]}, the network has {classes} "
                             "outputs")
    elif labels.ndim != 1:
        raise ValueError(f"{which} data: labels of shape {labels.shape}, expected ({n},) or ({n}, {classes})")
    elif labels.size and (labels.min() < 0 or labels.max() >= classes or labels.dtype.kind not in "iu"):
        raise ValueError(f"{which} data: labels must be integers in [0, {classes}), got values from "
                         f"{labels.min()} to {labels.max()} ({labels.dtype})")
    if n == 0:
        raise ValueError(f"{which} data is empty")
    return n
