"""The loopback HTTP server of the download tests: a client hanging up is expected there, and leaves no noise."""

import contextlib
import urllib.request

from tests.helpers import serve_files


def test_a_client_hanging_up_prints_nothing(capfd):
    body = bytes(8 << 20)  # larger than the socket buffers: the server is still writing when the client leaves
    with serve_files({"/big": (body, "ok"), "/slow": (b"late", "slow")}) as base:
        with urllib.request.urlopen(f"{base}/big", timeout=5) as response:
            assert response.read(16) == bytes(16)
        with contextlib.suppress(OSError):  # gives up before the slow route answers, as the download tests do
            urllib.request.urlopen(f"{base}/slow", timeout=0.2)
    # leaving the block waited for the handlers: anything they printed is in the capture now
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
