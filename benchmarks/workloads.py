"""The benchmark's workloads: a network, how it is trained, and what every contender starts from.

The initial weights and the batch order are anynet's own: the weights of the anynet network built for the
workload with the run's seed, the batch indices that anynet's Trainer draws for that seed. Every contender is
handed those, so none has to re-derive how anynet draws them.
"""

from __future__ import annotations

from anynet.backend import host_generator, to_numpy
from anynet.networks import MultiLayerNet
from anynet.trainer import epoch_order, steps_per_epoch


class Workload:
    """One benchmark: a network, how it is trained, and the batch indices every contender uses."""

    def __init__(self, key, title, sizes, activation, weight_init_std, optimizer, lr, batch_size, sampling,
                 evaluate=True, inference_batch=None):
        self.key, self.title = key, title
        self.sizes, self.activation, self.weight_init_std = sizes, activation, weight_init_std
        self.optimizer, self.lr = optimizer, lr
        self.batch_size, self.sampling = batch_size, sampling
        self.evaluate = evaluate
        self.inference_batch = inference_batch

    def network(self, seed, device="cpu"):
        """anynet's network for this workload, its weights drawn from ``seed``."""
        return MultiLayerNet(self.sizes[0], self.sizes[1:-1], self.sizes[-1], activation=self.activation,
                             weight_init_std=self.weight_init_std, device=device, seed=seed)

    def initial_weights(self, seed):
        """Host copies of the initial parameters of :meth:`network` for ``seed``."""
        return {name: to_numpy(value) for name, value in self.network(seed).params.items()}

    def batch_order(self, seed, n):
        """The sample indices of the first epoch over ``n`` samples, as anynet's Trainer draws them for ``seed``."""
        return epoch_order(host_generator(seed), n, self.batch_size, self.sampling)

    def steps(self, n):
        return steps_per_epoch(n, self.batch_size, self.sampling)

    def train_flops(self, n):
        """GEMM floating-point operations of one epoch: forward, weight gradients, input gradients past layer 1,
        plus the forward passes of the evaluation on n + 10000 images."""
        per_sample = sum(2 * a * b for a, b in zip(self.sizes, self.sizes[1:]))
        first = 2 * self.sizes[0] * self.sizes[1]
        images = self.steps(n) * self.batch_size if self.sampling == "replacement" else n
        return images * (3 * per_sample - first) + (n + 10000) * per_sample

    def inference_flops(self, n):
        return n * sum(2 * a * b for a, b in zip(self.sizes, self.sizes[1:]))


WORKLOADS = {
    # the book's ch.4 TwoLayerNet: weights 0.01 * randn
    "a": Workload("a", "book ch.4 epoch: 784-50-10 sigmoid, SGD 0.1, batch 100, 600 steps + accuracy",
                  [784, 50, 10], "sigmoid", 0.01, "sgd", 0.1, 100, "replacement"),
    "b": Workload("b", "784-100-100-10 ReLU, Adam 1e-3, batch 100, one epoch + accuracy",
                  [784, 100, 100, 10], "relu", "relu", "adam", 1e-3, 100, "shuffle"),
    "c": Workload("c", "inference, 10000 test images, 784-100-100-10 ReLU", [784, 100, 100, 10], "relu", "relu",
                  "adam", 1e-3, 100, "shuffle", inference_batch=(100, 10000)),
    # wide layers, so that the GEMMs are big enough for a GPU to show its throughput
    "d": Workload("d", "784-1024-1024-10 ReLU, Adam 1e-3, batch 4096, one epoch + accuracy",
                  [784, 1024, 1024, 10], "relu", "relu", "adam", 1e-3, 4096, "shuffle"),
}
