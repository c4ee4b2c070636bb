"""``sdcorr download --preset cleandift`` fetches the preset's U-Net file with its models."""

from __future__ import annotations

from pathlib import Path

from sdcorr.cli import main


def test_download_cleandift_fetches_the_unet_file(monkeypatch, tmp_path, capsys) -> None:
    from sdcorr import hub

    asked: list[list[str]] = []

    def fetch_all(needed, preset=None):
        asked.append([n.fetch for n in needed])
        return [tmp_path / f"{i}" for i in range(len(needed))]

    monkeypatch.setattr(hub, "fetch_all", fetch_all)
    assert main(["download", "--preset", "cleandift"]) == 0
    unet = "--unet-weights CompVis/cleandift:cleandift_sd15_unet.safetensors"
    sd, dino = "--model stable-diffusion-v1-5/stable-diffusion-v1-5", "--model facebook/dinov2-base"
    assert asked == [[dino, sd, unet]]
    assert f"unet_weights\t{tmp_path / '2'}" in capsys.readouterr().out
    assert main(["download", "--preset", "sd-dino"]) == 0
    assert not any(a.startswith("--unet-weights") for a in asked[-1])  # no U-Net file
    assert (
        main(["download", "--no-preset", "--model", "dinov3-base", "--unet-weights", "o/r:w"]) == 0
    )
    assert asked[-1] == ["--model facebook/dinov3-vitb16-pretrain-lvd1689m", "--unet-weights o/r:w"]


def test_download_names_every_missing_model_at_once(monkeypatch, tmp_path, capsys) -> None:
    """Offline with an empty cache: one line naming SD-1.5, the U-Net file and where each was
    looked for, and the one command that fetches them all."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert main(["download", "--preset", "cleandift"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 3 models are not in the Hugging Face cache") and "\n" not in err
    for looked in (
        "models--facebook--dinov2-base",
        "models--stable-diffusion-v1-5--stable-diffusion-v1-5",
        "models--CompVis--cleandift",
    ):
        assert f"(looked in {Path(tmp_path) / looked})" in err
    assert "`sdcorr download --preset cleandift`" in err and "HF_HUB_OFFLINE is set" in err
