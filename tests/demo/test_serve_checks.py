"""``sdcorr demo`` before it serves (issue 19, problem 7): a port already taken is one
``error:`` line (exit 2) found before any model loads and without a false "serving on" line;
a host other than a loopback address draws a warning that anyone on the network can use the
page; ``/match`` coordinates that are not numbers are one-line errors, not Python errors."""

from __future__ import annotations

import socket

import pytest

from sdcorr.cli import main
from sdcorr.errors import PointsError

from .test_session import tiny_options


@pytest.fixture
def taken_port():
    """A port something listens on (127.0.0.1, every interface)."""
    with socket.create_server(("0.0.0.0", 0)) as sock:
        yield sock.getsockname()[1]


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gradio", reason="sdcorr demo needs the sdcorr[demo] extra (Gradio)")
    from sdcorr.commands import demo

    monkeypatch.setattr(demo, "load_pipeline", lambda *a, **k: pytest.fail("models loaded"))


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_a_taken_port_is_found_before_the_models_load(
    host, taken_port, tiny_models, capsys, no_models
) -> None:
    assert (
        main(["demo", "--host", host, "--port", str(taken_port), *tiny_options(tiny_models)]) == 2
    )
    captured = capsys.readouterr()
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: cannot serve on {host}:{taken_port}: the port is already in use"
                      " (--host/--port)"]  # fmt: skip
    assert "serving on" not in captured.err + captured.out and "Traceback" not in captured.err
    warned = [ln for ln in captured.err.splitlines() if ln.startswith("warning: --host")]
    assert len(warned) == (host == "0.0.0.0")  # the exposure warning, before anything else


def test_an_address_this_machine_lacks_is_one_line(tiny_models, capsys, no_models) -> None:
    rc = main(["demo", "--host", "192.0.2.1", "--port", "7860", *tiny_options(tiny_models)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error: cannot serve on 192.0.2.1:7860: " in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("host", "warns"),
    [("127.0.0.1", False), ("localhost", False), ("::1", False), ("127.0.0.2", False),
     ("0.0.0.0", True), ("::", True), ("", True), ("192.168.1.20", True), ("myhost", True)],
)  # fmt: skip
def test_only_loopback_hosts_serve_without_a_warning(host, warns) -> None:
    from sdcorr.commands.demo import exposure_warning

    warning = exposure_warning(host, 7860)
    assert (warning is not None) == warns
    if warns:
        assert (
            "anyone who can reach this machine on port 7860 can upload files and run the"
            " models" in warning
        )
        assert warning.startswith("warning: --host ") and "\n" not in warning


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "null"), ("12", '"12"'), (True, "true"), ([1, 2], "[1, 2]"), ({"x": 1}, '{"x": 1}')],
)
def test_a_coordinate_that_is_not_a_number_is_one_line(value, shown) -> None:
    from sdcorr.demo.session import coordinate

    with pytest.raises(PointsError) as err:
        coordinate("x", value)
    assert str(err.value) == f"x must be a number (a pixel coordinate in A), got {shown}"
    assert coordinate("y", 3) == 3.0 and coordinate("y", 2.5) == 2.5
    with pytest.raises(PointsError, match="y must be a finite number, got nan"):
        coordinate("y", float("nan"))
