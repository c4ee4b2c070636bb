"""Missing models (issue 19, problems 8 and 9): the README's first command without the weights,
offline or with the Hub unreachable, stops before loading anything with ONE line that names every
missing model (and the U-Net file of ``cleandift``), where each was looked for, and the one
command that fetches them all; no "downloading" line, no hub retries, nothing written."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sdcorr.cli import main

REPO = Path(__file__).resolve().parents[1]


def _first_command() -> list[str]:
    """The README's first command after ``pip install -e . &&``, without ``sdcorr``."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    first = block.group(1).splitlines()[0]
    words = shlex.split(first.split(" && ", 1)[1])
    assert words[:2] == ["sdcorr", "match"] and "--out" in words
    return words[1:]


FIRST = _first_command()  # relative paths: run in a folder whose examples/ is the repo's


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    if not (work / "examples").exists():
        (work / "examples").symlink_to(REPO / "examples")
    return work


DINO_B = ("facebook/dinov2-base", "models--facebook--dinov2-base")
SD15 = ("stable-diffusion-v1-5/stable-diffusion-v1-5",
        "models--stable-diffusion-v1-5--stable-diffusion-v1-5")  # fmt: skip
CLEANDIFT = ("CompVis/cleandift:cleandift_sd15_unet.safetensors", "models--CompVis--cleandift")
# (the first command's extra flags, the models it misses, the command that fetches them all)
PRESETS = [
    ([], [DINO_B, SD15], "sdcorr download --preset sd-dino"),
    (["--preset", "cleandift"], [DINO_B, SD15, CLEANDIFT], "sdcorr download --preset cleandift"),
]


def _check_message(err: str, cache: Path, models, command: str, reason: str) -> None:
    """One ``error:`` line and nothing else, naming each model with its cache folder."""
    assert err.startswith("error: ") and err.count("\n") == 0, err
    for name, folder in models:
        assert f"'{name}' (looked in {cache / folder})" in err, err
    assert f"`{command}`" in err and reason in err, err
    if len(models) > 1:
        assert f"{len(models)} models are not in the Hugging Face cache" in err


@pytest.mark.parametrize(("extra", "models", "command"), PRESETS)
def test_first_command_offline_names_every_missing_model(
    extra, models, command, tmp_path, monkeypatch, capsys
) -> None:
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # an empty cache
    work = _workdir(tmp_path)
    monkeypatch.chdir(work)
    assert main([*FIRST, *extra]) == 2  # HF_HUB_OFFLINE=1 (conftest)
    _check_message(capsys.readouterr().err.strip(), cache, models, command, "HF_HUB_OFFLINE is set")
    assert [p.name for p in work.iterdir()] == ["examples"]  # nothing written


def test_only_what_is_missing_is_named_and_fetched(tiny_models, tmp_path, monkeypatch,
                                                   capsys) -> None:  # fmt: skip
    """DINO given as a local folder: only SD-1.5 is missing, and the fix fetches only it."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(_workdir(tmp_path))
    assert main([*FIRST, "--dino-model", str(tiny_models["dino"])]) == 2
    err = capsys.readouterr().err.strip()
    _check_message(err, tmp_path / "hub", [SD15],
                   f"sdcorr download --no-preset --model {SD15[0]}", "HF_HUB_OFFLINE is set")  # fmt: skip
    assert err.startswith(f"error: Stable Diffusion model '{SD15[0]}' (looked in")
    assert "dinov2" not in err


@contextmanager
def counting_server() -> Iterator[tuple[str, list[str]]]:
    """A local TCP server that is not a Hugging Face Hub: it reads each request's first line
    and closes the connection without an answer. Yields its URL and the list of request lines
    (``"HEAD /"``, ``"GET /api/models/..."``) it received."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.2)
    hits: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                line = conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
                hits.append(line.rsplit(" ", 1)[0])  # without " HTTP/1.1"

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", hits
    finally:
        stop.set()
        thread.join()
        sock.close()


def _model_requests(hits: list[str]) -> list[str]:
    """The requests for a model or file (snapshot listings, file lookups, their retries)."""
    return [h for h in hits if "/resolve/" in h or "/api/models/" in h]


def _run_unreachable(argv: list[str], tmp_path: Path, hub: str) -> subprocess.CompletedProcess:
    """``sdcorr ARGV`` in a fresh process: empty HF cache, HF_HUB_OFFLINE unset, the Hub at
    ``hub`` (huggingface_hub reads HF_ENDPOINT when it is imported)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    env.update(PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=hub,
               NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")  # fmt: skip
    return subprocess.run([sys.executable, "-m", "sdcorr.cli", *argv], cwd=_workdir(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize(("extra", "models", "command"), PRESETS)
def test_first_command_with_the_hub_unreachable_asks_it_once(extra, models, command,
                                                             tmp_path) -> None:  # fmt: skip
    """Not declared offline, but nothing answers at HF_ENDPOINT: one probe, no retries, and
    no misleading "downloading ..." line before the one error."""
    with counting_server() as (hub, hits):
        proc = _run_unreachable([*FIRST, *extra], tmp_path, hub)
    assert proc.returncode == 2 and proc.stdout == ""
    _check_message(proc.stderr.strip(), tmp_path / "hf" / "hub", models, command,
                   f"the Hugging Face Hub ({hub}) cannot be reached")  # fmt: skip
    assert hits.count("HEAD /") == 1 and _model_requests(hits) == []  # one probe, no retries
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["examples"]


def test_unet_weights_repo_file_with_the_hub_unreachable_fails_fast(tiny_models, tmp_path) -> None:
    """``--unet-weights repo:file`` not cached, Hub unreachable but not declared offline: the
    good one-line error before the SD model loads, without huggingface_hub's five retries of
    the file lookup (and their ten log lines)."""
    spec = "CompVis/cleandift:cleandift_sd15_unet.safetensors"
    argv = [*FIRST, "--preset", "sd", "--sd-model", str(tiny_models["sd"]), "--unet-weights", spec,
            "--sd-frame", "128", "--sd-tile", "0", "--device", "cpu"]  # fmt: skip
    with counting_server() as (hub, hits):
        proc = _run_unreachable(argv, tmp_path, hub)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    _check_message(err, tmp_path / "hf" / "hub", [CLEANDIFT],
                   f"sdcorr download --no-preset --unet-weights {spec}",
                   "cannot be reached")  # fmt: skip
    assert "--unet-weights PATH" in err  # nothing else on stderr: no "loading", no "Retrying"
    assert hits.count("HEAD /") == 1 and _model_requests(hits) == []
