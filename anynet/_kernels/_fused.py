"""What the fused training steps of anynet._kernels share: flat parameter buffers and the choice of networks."""

from __future__ import annotations

import math


class Flat:
    """``views[name]`` has ``shapes[name]`` and lives in ``buffer``; ``values`` (same names) are copied in."""

    def __init__(self, xp, shapes, dtype, values=None):
        self.buffer = xp.zeros(sum(math.prod(shape) for shape in shapes.values()), dtype=dtype)
        self.views, offset = {}, 0
        for name, shape in shapes.items():
            size = math.prod(shape)
            self.views[name] = self.buffer[offset:offset + size].reshape(shape)
            if values is not None and values.get(name) is not None:
                self.views[name][...] = values[name]
            offset += size
        self._pairs = list(self.views.items())

    def holds(self, arrays) -> bool:
        """Whether ``arrays`` still are these views (nothing replaced them since); checked every step."""
        get = arrays.get
        for name, view in self._pairs:
            if get(name) is not view:
                return False
        return True


class FusedStepBase:
    """What the CPU and GPU fused steps share: which networks they take, and the flat buffers they keep.

    A subclass sets ``xp`` (its array module), ``Buffers`` (per-batch-size work arrays), ``scratch_flats`` (names of
    flat work buffers besides the gradients), ``supported`` (optimizer classes) and implements ``__call__``.
    On first use the network's parameters (and the optimizer's state) move into one flat buffer each, the dict
    entries becoming views of it: everything else keeps working on them as before.
    """

    xp = None
    Buffers = None
    scratch_flats: tuple = ()
    supported: tuple = ()

    @classmethod
    def create(cls, network, optimizer):
        """The fused step, or None when this network or optimizer has no fast path here."""
        if type(optimizer) not in cls.supported or network.activation not in ("relu", "sigmoid"):
            return None
        if network.params["W1"].dtype not in (cls.xp.float32, cls.xp.float64):
            return None
        return cls(network, optimizer)

    def __init__(self, network, optimizer):
        self.network = network
        self.optimizer = optimizer
        self.depth = network.depth
        self.sizes = network.sizes
        self.relu = network.activation == "relu"
        self.dtype = network.params["W1"].dtype
        self.W = [None] + [f"W{i}" for i in range(1, self.depth + 1)]
        self.b = [None] + [f"b{i}" for i in range(1, self.depth + 1)]
        self.shapes = {name: value.shape for name, value in network.params.items()}
        self.buffers = {}
        self.params = self.grads = None
        self.scratch = {}
        self.slots = {}

    def needs_flat_params(self) -> bool:
        return True

    def _bind(self):
        """Put the parameters and optimizer state into flat buffers, again if anything replaced them."""
        if not self.needs_flat_params():
            return
        params = self.network.params
        if self.params is None or not self.params.holds(params):
            self.params = Flat(self.xp, self.shapes, self.dtype, params)
            params.update(self.params.views)
            self.network._build_layers()
            self.grads = Flat(self.xp, self.shapes, self.dtype)
            self.scratch = {name: Flat(self.xp, self.shapes, self.dtype) for name in self.scratch_flats}
        for slot in self.optimizer.slots:
            state = self.optimizer.state[slot]
            if slot not in self.slots or not self.slots[slot].holds(state):
                self.slots[slot] = Flat(self.xp, self.shapes, self.dtype, state)
                state.update(self.slots[slot].views)

    def _buffers(self, batch):
        if batch not in self.buffers:
            self.buffers[batch] = self.Buffers(self.sizes, batch, self.dtype)
        return self.buffers[batch]
