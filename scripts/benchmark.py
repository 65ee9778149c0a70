#!/usr/bin/env python3
"""anynet against the book's NumPy code and idiomatic PyTorch on the same work; see docs/performance.md.

    python scripts/benchmark.py --device cpu --json docs/benchmark-cpu.json

The benchmark is the checkout's benchmarks/ package (not installed with anynet); this puts the checkout first on
sys.path to import it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
