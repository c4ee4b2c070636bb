"""``sdcorr download --preset cleandift`` fetches the preset's U-Net file with its models."""

from __future__ import annotations

from pathlib import Path

from sdcorr.cli import main


def test_download_cleandift_fetches_the_unet_file(monkeypatch, tmp_path, capsys) -> None:
    from sdcorr import hub
    from sdcorr.features import unet_weights

    fetched: list[str] = []
    monkeypatch.setattr(hub, "download", lambda preset, revision=None: {"sd": tmp_path / "sd"})

    def resolve(spec: str) -> Path:
        fetched.append(spec)
        return tmp_path / "unet.safetensors"

    monkeypatch.setattr(unet_weights, "resolve_weights", resolve)
    assert main(["download", "--preset", "cleandift"]) == 0
    assert fetched == ["CompVis/cleandift:cleandift_sd15_unet.safetensors"]
    assert f"unet_weights\t{tmp_path / 'unet.safetensors'}" in capsys.readouterr().out
    assert main(["download", "--preset", "sd-dino"]) == 0
    assert fetched == ["CompVis/cleandift:cleandift_sd15_unet.safetensors"]  # no U-Net file
