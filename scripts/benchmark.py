"""anynet against the book's NumPy code and idiomatic PyTorch on the same work; see docs/performance.md.

    python scripts/benchmark.py --device cpu --json docs/benchmark-cpu.json
"""

import sys

from anynet.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
