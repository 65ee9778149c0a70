"""The contenders: anynet and the programs it is measured against, each written the way its users write it.

The peers are not anynet code: each is written in its own library on purpose (NumPy as the book writes it,
PyTorch as its tutorials do). Every contender gets the same data, initial weights and batch indices: those of
anynet's network and Trainer for the run's seed (see workloads.py).
"""

from __future__ import annotations

import time

import numpy as np

import anynet
from anynet.trainer import Trainer

# ------------------------------------------------------------------------------------------------------------
# anynet, as its users run it
# ------------------------------------------------------------------------------------------------------------


class Anynet:
    """anynet as its users run it: the workload's network and the Trainer, data placed on the device once."""

    name = "anynet"

    def __init__(self, workload, data, device_name, seed):
        self.w, self.seed = workload, seed
        self.where = anynet.device(device_name)
        (x, t), (x_test, t_test) = data
        self.data = [self.where.asarray(a) for a in (x, t, x_test, t_test)]
        self.reset()

    def reset(self):
        """A fresh network (the initial weights every contender gets) and Trainer (the same batch order)."""
        self.network = self.w.network(self.seed, self.where)
        self.trainer = Trainer(self.network, *self.data, epochs=1, mini_batch_size=self.w.batch_size,
                               optimizer=self.w.optimizer, optimizer_param={"lr": self.w.lr}, seed=self.seed,
                               sampling=self.w.sampling, verbose=False, progress=False)

    def epoch(self, order):
        self.trainer.train_epoch()  # draws ``order`` itself, from the same seed
        return self.trainer.train_loss_list[-1], self.trainer.train_acc_list[-1], self.trainer.test_acc_list[-1]

    def infer(self, batch_size):
        return self.network.accuracy(self.data[2], self.data[3], batch_size=batch_size)

    def synchronize(self):
        self.where.synchronize()


# ------------------------------------------------------------------------------------------------------------
# The book's NumPy, float32
# ------------------------------------------------------------------------------------------------------------


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def _cross_entropy_error(y, t):
    if t.size == y.size:
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


class BookNumPy:
    """The book's ch04 TwoLayerNet and train_neuralnet.py loop (and its ch05-06 layers, Adam and MultiLayerNet
    for the deeper workloads), in float32. As in the book, each step computes the gradient, updates, then the loss."""

    name = "book NumPy"

    def __init__(self, workload, data, weights):
        self.w = workload
        (self.x, self.t), (self.x_test, self.t_test) = data
        self.t_onehot = np.eye(10, dtype=np.float32)[self.t]
        self.params = {k: v.copy() for k, v in weights.items()}
        self.m = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.iter = 0

    def _forward(self, x):
        """Pre-activations a_i and outputs z_i of every layer (z_0 = x; the last a is the scores)."""
        depth = len(self.w.sizes) - 1
        pre, out = [None], [x]
        for i in range(1, depth + 1):
            a = np.dot(out[-1], self.params[f"W{i}"]) + self.params[f"b{i}"]
            pre.append(a)
            if i < depth:
                out.append(_sigmoid(a) if self.w.activation == "sigmoid" else np.maximum(0, a))
        return pre, out

    def predict(self, x):
        return _softmax(self._forward(x)[0][-1])

    def gradient(self, x, t):
        depth = len(self.w.sizes) - 1
        pre, out = self._forward(x)
        dy = (_softmax(pre[-1]) - t) / x.shape[0]
        grads = {}
        for i in range(depth, 0, -1):
            grads[f"W{i}"] = np.dot(out[i - 1].T, dy)
            grads[f"b{i}"] = np.sum(dy, axis=0)
            if i > 1:
                da = np.dot(dy, self.params[f"W{i}"].T)
                if self.w.activation == "sigmoid":  # the book's sigmoid_grad(a) = (1 - sigmoid(a)) * sigmoid(a)
                    dy = (1.0 - _sigmoid(pre[i - 1])) * _sigmoid(pre[i - 1]) * da
                else:  # the book's Relu layer: dout[mask] = 0
                    da[pre[i - 1] <= 0] = 0
                    dy = da
        return grads

    def update(self, grads):
        if self.w.optimizer == "sgd":
            for key in self.params:
                self.params[key] -= self.w.lr * grads[key]
            return
        self.iter += 1  # the book's common/optimizer.py Adam
        lr_t = self.w.lr * np.sqrt(1.0 - 0.999**self.iter) / (1.0 - 0.9**self.iter)
        for key in self.params:
            self.m[key] += (1 - 0.9) * (grads[key] - self.m[key])
            self.v[key] += (1 - 0.999) * (grads[key] ** 2 - self.v[key])
            self.params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)

    def accuracy(self, x, t):
        y = np.argmax(self.predict(x), axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def epoch(self, order):
        loss = None
        b = self.w.batch_size
        for i in range(self.w.steps(self.x.shape[0])):
            batch_mask = order[i * b:(i + 1) * b]
            x_batch, t_batch = self.x[batch_mask], self.t_onehot[batch_mask]
            self.update(self.gradient(x_batch, t_batch))
            loss = _cross_entropy_error(self.predict(x_batch), t_batch)
        return float(loss), self.accuracy(self.x, self.t), self.accuracy(self.x_test, self.t_test)

    def infer(self, batch_size):
        n = self.x_test.shape[0]
        guesses = np.concatenate([np.argmax(self.predict(self.x_test[i:i + batch_size]), axis=1)
                                  for i in range(0, n, batch_size)])
        return float(np.mean(guesses == self.t_test))

    def synchronize(self):
        pass


# ------------------------------------------------------------------------------------------------------------
# PyTorch, idiomatic: nn.Sequential, autograd, torch.optim, data already on the device
# ------------------------------------------------------------------------------------------------------------


class PyTorch:
    name = "PyTorch"

    def __init__(self, workload, data, weights, device_name):
        import torch

        self.torch = torch
        self.w = workload
        self.device = torch.device(device_name)
        (x, t), (x_test, t_test) = data
        self.x, self.t = torch.from_numpy(x).to(self.device), torch.from_numpy(t).to(self.device)
        self.x_test, self.t_test = torch.from_numpy(x_test).to(self.device), torch.from_numpy(t_test).to(self.device)
        depth = len(workload.sizes) - 1
        layers = []
        for i in range(1, depth + 1):
            linear = torch.nn.Linear(workload.sizes[i - 1], workload.sizes[i])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(weights[f"W{i}"].T))
                linear.bias.copy_(torch.from_numpy(weights[f"b{i}"]))
            layers.append(linear)
            if i < depth:
                layers.append(torch.nn.Sigmoid() if workload.activation == "sigmoid" else torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers).to(self.device)
        # Adam with the book's epsilon; PyTorch adds it after the bias correction, the book before: close enough
        # for timing, and the accuracies printed beside the times show the runs learnt the same.
        self.optimizer = (torch.optim.SGD(self.model.parameters(), lr=workload.lr) if workload.optimizer == "sgd"
                          else torch.optim.Adam(self.model.parameters(), lr=workload.lr, eps=1e-7))

    def _accuracy(self, x, t):
        with self.torch.no_grad():
            return (self.model(x).argmax(dim=1) == t).float().mean().item()

    def epoch(self, order):
        torch = self.torch
        order = torch.from_numpy(order).to(self.device)
        b = self.w.batch_size
        losses = []
        for i in range(self.w.steps(self.x.shape[0])):
            batch = order[i * b:(i + 1) * b]
            self.optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(self.model(self.x[batch]), self.t[batch])
            loss.backward()
            self.optimizer.step()
            losses.append(loss.detach())
        return float(torch.stack(losses)[-1]), self._accuracy(self.x, self.t), self._accuracy(self.x_test, self.t_test)

    def infer(self, batch_size):
        torch = self.torch
        n = self.x_test.shape[0]
        with torch.no_grad():
            guesses = torch.cat([self.model(self.x_test[i:i + batch_size]).argmax(dim=1)
                                 for i in range(0, n, batch_size)])
        return (guesses == self.t_test).float().mean().item()

    def synchronize(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


def gemm_rate(device_name: str, size: int = 4096, repeats: int = 3) -> float:
    """Measured float32 GEMM GFLOP/s of ``device_name``'s library, best of ``repeats``."""
    where = anynet.device(device_name)
    xp = where.xp
    a = where.asarray(np.random.default_rng(0).standard_normal((size, size)), dtype="float32")
    b = where.asarray(np.random.default_rng(1).standard_normal((size, size)), dtype="float32")
    best = float("inf")
    with where.active():  # CuPy runs on its current GPU: make it the one measured
        a @ b
        for _ in range(repeats):
            where.synchronize()
            start = time.perf_counter()
            xp.matmul(a, b)
            where.synchronize()
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9
