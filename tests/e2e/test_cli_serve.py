"""``precision serve`` stops the BentoML server it started when it is stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def test_sigterm_to_serve_stops_the_bentoml_server_too(tmp_path) -> None:
    """SIGTERM once killed the command alone and left the server serving."""
    port = free_port()
    command = [sys.executable, "-c", "import precision_cli; precision_cli.main()"]
    parent = subprocess.Popen(
        [*command, "serve", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=dict(os.environ, PRECISION_DATA_DIR=str(tmp_path)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: listening(port), 120), "the server never listened"

        parent.send_signal(signal.SIGTERM)

        assert parent.wait(timeout=60) is not None
        assert wait_for(lambda: not listening(port), 30), "the server still listens"
    finally:
        # Whatever is left of the session the command started goes, pass or fail.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
