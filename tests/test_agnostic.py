"""anynet's array code never names an array library: only backend.py (and backend-specific _kernels/) may."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "anynet"
# Modules allowed to name a library: the backend, host-side I/O that reads files into NumPy, the fast paths in
# _kernels/ and the benchmark's peers (written in their own libraries on purpose).
ALLOWED = {"backend.py", "datasets.py", "idx.py", "io.py"}
LIBRARIES = "numpy|cupy|torch|array_api_strict"
LIBRARY_NAME = re.compile(rf"\b(import\s+({LIBRARIES})|from\s+({LIBRARIES})\b|np\.|cupy\.|torch\.)")


def test_no_array_library_is_named_outside_the_backend():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.name in ALLOWED or relative.parts[0] in ("_kernels", "benchmark"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if LIBRARY_NAME.search(code):
                offenders.append(f"anynet/{relative}:{number}: {line.strip()}")
    assert not offenders, "array libraries named outside backend.py:\n" + "\n".join(offenders)
    assert len(list(PACKAGE.glob("*.py"))) >= 6  # the scan really saw the package
