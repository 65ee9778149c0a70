"""Several arrays as views of one contiguous buffer, so that an elementwise update of all of them is one pass."""

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
