"""Run ``sdcorr demo`` in a subprocess on a free 127.0.0.1 port, always shut down afterwards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def demo_server(options: Sequence[str], timeout: float = 240.0) -> Iterator[str]:
    """Serve ``sdcorr demo OPTIONS`` on 127.0.0.1; yield its URL; stop it on exit.

    Raises:
        RuntimeError: the server exited or did not answer within ``timeout`` seconds (with the
            end of its output).
    """
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    cmd = [sys.executable, "-m", "sdcorr.cli", "-q", "demo", "--host", "127.0.0.1"]
    log = (Path(os.environ.get("TMPDIR", "/tmp")) / f"sdcorr-demo-{port}.log").open("w+")
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), *options], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait(proc, url, timeout, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait(proc: subprocess.Popen, url: str, timeout: float, log) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            break
        try:
            opener.open(url, timeout=5)
            return
        except OSError:
            time.sleep(0.5)
    log.seek(0)
    tail = log.read()[-2000:]
    raise RuntimeError(f"sdcorr demo did not come up at {url} (exit {proc.poll()}):\n{tail}")
