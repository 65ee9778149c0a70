"""What the fused training steps of anynet._kernels share: flat parameter buffers and the choice of networks."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from ..backend import namespace
from ..functions import check_labels, label_dtype_error

# The activations the fast paths implement.
ACTIVATIONS = ("relu", "sigmoid")


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
        for name, view in self._pairs:  # noqa: SIM110 - a plain loop: all() over a generator costs more per step
            if get(name) is not view:
                return False
        return True


class FusedStepBase:
    """What the CPU and GPU fused steps share: which stacks they take, and the flat buffers they keep.

    A subclass sets ``xp`` (its array module), ``Buffers`` (per-batch-size work arrays), ``scratch_flats`` (names of
    flat work buffers besides the gradients), ``updates`` (its module's ``UPDATES`` table: the supported optimizers
    are its keys, matched by exact type) and implements ``__call__``.
    On first use the parameters (and the optimizer's state) move into one flat buffer each, the dict entries
    becoming views of it (``spec.rebind`` tells the parameters' owner): everything else keeps working on them.
    """

    xp: Any = None
    Buffers: Any = None
    scratch_flats: tuple = ()
    updates: ClassVar[dict] = {}

    @classmethod
    def create(cls, spec, optimizer):
        """The fused step, or None when this stack or optimizer has no fast path here."""
        if type(optimizer) not in cls.updates or spec.activation not in ACTIVATIONS:
            return None
        if spec.params()["W1"].dtype not in (cls.xp.float32, cls.xp.float64):
            return None
        return cls(spec, optimizer)

    def __init__(self, spec, optimizer):
        params = spec.params()
        self.spec = spec
        self.optimizer = optimizer
        self.rule = self.updates[type(optimizer)]  # this optimizer's entry in the table
        self.depth = spec.depth
        self.sizes = list(spec.sizes)
        self.relu = spec.activation == "relu"
        self.dtype = params["W1"].dtype
        self.W = [None] + [f"W{i}" for i in range(1, self.depth + 1)]
        self.b = [None] + [f"b{i}" for i in range(1, self.depth + 1)]
        self.shapes = {name: value.shape for name, value in params.items()}
        self.buffers: dict[int, Any] = {}
        self.params: Any = None  # the Flat of the parameters once bound, and of their gradients
        self.grads: Any = None
        self.scratch: dict[str, Flat] = {}
        self.slots: dict[str, Flat] = {}
        self._checked_labels: Any = None  # the label array last found valid: checked once, not on every step

    def needs_flat_params(self) -> bool:
        return True

    def _bind(self):
        """Put the parameters and optimizer state into flat buffers, again if anything replaced them; returns the
        current parameters by name (the flat views where there are flat buffers)."""
        params = self.spec.params()  # read on every step: whatever replaced the parameters since is seen
        if not self.needs_flat_params():
            return params
        if self.params is None or not self.params.holds(params):
            self.params = Flat(self.xp, self.shapes, self.dtype, params)
            self.spec.rebind(self.params.views)
            self.grads = Flat(self.xp, self.shapes, self.dtype)
            self.scratch = {name: Flat(self.xp, self.shapes, self.dtype) for name in self.scratch_flats}
        for slot in self.optimizer.slots:
            state = self.optimizer.state[slot]
            if slot not in self.slots or not self.slots[slot].holds(state):
                self.slots[slot] = Flat(self.xp, self.shapes, self.dtype, state)
                self.optimizer.rebind_state(slot, self.slots[slot].views)
        return self.params.views

    # Whether the label check may read the labels back: on the host it costs nothing; on a GPU it would make the
    # step wait, so there the kernel turns a bad label's row into NaN instead (a NaN loss, never a wrong one).
    reads_labels = True

    def check_labels(self, t):
        """Refuse non-integer labels, and (where ``reads_labels``, with the generic path's ``check_labels``) labels
        outside 0..classes-1, before a kernel indexes with them: once per label array, so the Trainer (which passes
        the same training labels every step) pays it once. One-hot targets pass unchecked."""
        if t.ndim != 1 or t is self._checked_labels:
            return
        if self.reads_labels:
            check_labels(namespace(t), t, self.sizes[-1])
        elif t.dtype.kind not in "iu":
            raise label_dtype_error(self.sizes[-1], t.dtype)
        self._checked_labels = t

    def input_rows(self, x, indices, out):
        """Rows ``indices`` of ``x`` (all if None) flattened, in the parameters' dtype: device data of another
        float dtype is cast (the kernels take one dtype), into ``out`` where the dtypes allow."""
        xp = self.xp
        if (x.shape[0] if indices is None else indices.shape[0]) == 0:
            raise ValueError(f"cannot take a training step on an empty batch (x of shape {tuple(x.shape)}): pass at "
                             "least one sample")
        if indices is None:
            rows = xp.reshape(x, (x.shape[0], -1))
            return rows if rows.dtype == self.dtype else rows.astype(self.dtype)
        flat = xp.reshape(x, (x.shape[0], -1))
        if flat.dtype == self.dtype:
            return self._take_into(flat, indices, out)
        return xp.take(flat, indices, axis=0).astype(self.dtype)

    def _take_into(self, flat, indices, out):
        return self.xp.take(flat, indices, axis=0, out=out)

    def _buffers(self, batch):
        if batch not in self.buffers:
            self.buffers[batch] = self.Buffers(self.sizes, batch, self.dtype)
        return self.buffers[batch]
