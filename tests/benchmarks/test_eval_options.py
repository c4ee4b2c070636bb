"""Options of ``benchmarks/eval.py`` / ``spair.py`` with a fake pipeline in place of the models:
resume checks before loading, frame/tile options, dtype and prompt defaults."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from sdcorr import device

from .test_spair_script import REPO, spair_main


def _fake_pipe_class():
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_fakes", REPO / "tests/eval/fakes.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["eval_fakes"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod.FakePipe


FakePipe = _fake_pipe_class()


@pytest.fixture
def loads(monkeypatch) -> list[dict]:
    """Replace model loading by a fake pipeline; record every load's arguments."""
    from sdcorr.pipeline import SDDino

    calls: list[dict] = []

    def fake(*args, **kwargs):
        calls.append(kwargs)
        pipe = FakePipe()
        calls[-1]["pipe"] = pipe
        return pipe

    monkeypatch.setattr(SDDino, "from_pretrained", fake)
    # fp16 on a CPU without its kernels is refused (tests/test_optimisations.py); here the
    # models are fakes, so every dtype may pass through
    monkeypatch.setattr(device, "native_dtype", lambda dt, dev: True)
    return calls


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_resume_accepts_another_spelling_of_root(spair_root, tmp_path, loads, monkeypatch) -> None:
    out = tmp_path / "out"
    main = spair_main
    assert main(["--root", str(spair_root), "--out", str(out), "-q"]) == 0
    monkeypatch.chdir(spair_root.parent)
    for spelling in (
        f"{spair_root}/",
        f"./{spair_root.name}",
        f"{spair_root}/../{spair_root.name}",
    ):
        assert main(["--root", spelling, "--out", str(out), "-q"]) == 0
        assert _json(out / "timing.json")["rank0"]["pairs"] == 0  # resumed, nothing redone
    assert _json(out / "config.json")["eval"]["root"] == str(spair_root)


def test_resume_refusal_names_the_setting_before_any_model_loads(spair_root, tmp_path, loads,
                                                                capsys) -> None:  # fmt: skip
    out = tmp_path / "out"
    main = spair_main
    assert main(["--root", str(spair_root), "--out", str(out), "-q"]) == 0
    assert len(loads) == 1
    assert main(["--root", str(spair_root), "--out", str(out), "--dino-frame", "224", "-q"]) == 2
    assert len(loads) == 1  # refused before loading
    err = capsys.readouterr().err
    # the default frame is recorded as None (60 cells of the model's patch, 840 for DINOv2)
    assert "pipeline.dino.frame: None (previous run) != 224 (this run)" in err
    assert err.count("\n") == 1 and "sd.frame" not in err


def test_sd_tile_0_means_no_tiles_and_bad_frames_are_refused(spair_root, tmp_path, loads,
                                                             capsys) -> None:  # fmt: skip
    main = spair_main
    out = tmp_path / "o"
    assert main(["--root", str(spair_root), "--out", str(out), "--sd-tile", "0", "--limit", "1",
                 "-q"]) == 0  # fmt: skip
    cfg = _json(out / "config.json")["pipeline"]
    assert cfg["sd"]["tile_size"] is None and loads[0]["config"].sd.tile_size is None
    for opt, value, msg in (("--sd-frame", "0", "--sd-frame must be a positive multiple of 64"),
                            ("--sd-frame", "100", "--sd-frame must be a positive multiple of 64"),
                            ("--sd-tile", "-64", "--sd-tile must be 0 (no tiles)"),
                            ("--dino-frame", "0", "--dino-frame must be positive")):  # fmt: skip
        argv = ["--root", str(spair_root), "--out", str(tmp_path / "x"), opt, value, "-q"]
        assert main(argv) == 2
        assert msg in capsys.readouterr().err
    assert len(loads) == 1 and not (tmp_path / "x").exists()


def test_fp32_by_default_fp16_one_flag_away(spair_root, tmp_path, loads) -> None:
    main = spair_main
    assert (
        main(["--root", str(spair_root), "--out", str(tmp_path / "a"), "--limit", "1", "-q"]) == 0
    )
    assert loads[0]["dtype"] == torch.float32
    a = tmp_path / "a"
    assert _json(a / "summary.json")["config"]["dtype"] == "fp32"
    assert _json(a / "timing.json")["dtype"] == "fp32"
    assert _json(a / "config.json")["dtype"] == "fp32"
    assert json.loads((a / "pairs.jsonl").read_text().splitlines()[0])["dtype"] == "fp32"
    b = tmp_path / "b"
    assert main(["--root", str(spair_root), "--out", str(b), "--limit", "1", "--dtype", "half",
                 "-q"]) == 0  # fmt: skip
    assert (
        loads[1]["dtype"] == torch.float16
        and _json(b / "summary.json")["config"]["dtype"] == "fp16"
    )


def test_empty_prompt_by_default_category_prompt_with_natural_names(spair_root, tmp_path, loads):
    main = spair_main
    assert main(["--root", str(spair_root), "--out", str(tmp_path / "a"), "-q"]) == 0
    assert {c for _, c in loads[0]["pipe"].calls} == {None}
    assert main(["--root", str(spair_root), "--out", str(tmp_path / "b"), "--prompt", "category",
                 "-q"]) == 0  # fmt: skip
    cats = {c for _, c in loads[1]["pipe"].calls}
    assert cats == {"aeroplane", "cow", "dog", "horse", "motorbike", "potted plant"}
    assert _json(tmp_path / "b" / "summary.json")["config"]["prompt"] == "category"


def test_category_weighted_in_summary_and_table(spair_root, tmp_path, loads, capsys) -> None:
    main = spair_main
    out = tmp_path / "a"
    assert main(["--root", str(spair_root), "--out", str(out), "-q"]) == 0
    pck = _json(out / "summary.json")["pck"]
    for table in pck.values():
        cats = table["per_category"].values()
        n = sum(c["n_pairs"] for c in cats)
        w = sum(c["per_keypoint"] * c["n_pairs"] for c in cats) / n
        assert table["category_weighted"]["per_keypoint"] == pytest.approx(w)
    assert "| *category weighted* |" in capsys.readouterr().out


def test_sampling_with_replacement_matches_the_reference_draw(spair_root, tmp_path, loads) -> None:
    import numpy as np

    out = tmp_path / "a"
    main = spair_main
    argv = ["--root", str(spair_root), "--out", str(out), "--sample", "3",
            "--sample-with-replacement", "-q"]  # fmt: skip
    assert main(argv) == 0
    names = [json.loads(s)["pair"] for s in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(names) == 18  # 3 draws in each of the 6 one-pair categories
    assert np.random.RandomState(42).choice(1, 3).tolist() == [0, 0, 0]
    assert names[:3] == [f"000167-2008_007604-2009_001056:aeroplane{s}" for s in ("", "#2", "#3")]


def test_cleandift_captions_with_the_raw_category_unless_told(spair_root, tmp_path, loads):
    """CleanDIFT's evaluation captions "A photo of a {category}" with the raw SPair name;
    ``--preset cleandift`` does so by default and records it; ``--prompt`` overrides."""
    main = spair_main
    base = ["--root", str(spair_root), "--preset", "cleandift", "-q"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert _json(tmp_path / "a" / "config.json")["prompt"] == "category-raw"
    cats = {c for _, c in loads[0]["pipe"].calls}
    assert cats == {"aeroplane", "cow", "dog", "horse", "motorbike", "pottedplant"}
    assert loads[0]["config"].sd.prompt_template == "A photo of a {category}"
    assert main([*base, "--out", str(tmp_path / "b"), "--prompt", "empty"]) == 0
    assert _json(tmp_path / "b" / "config.json")["prompt"] == "empty"
    assert {c for _, c in loads[1]["pipe"].calls} == {None}


def test_unet_weights_and_no_noise_reach_the_pipeline_as_in_sdcorr_match(
    spair_root, tmp_path, loads
) -> None:
    from sdcorr.cli import build_parser
    from sdcorr.commands.options import resolve_args

    out = tmp_path / "a"
    flags = ["--unet-weights", "org/unet:w.safetensors", "--no-noise", "--sd-seed", "7"]
    assert spair_main(["--root", str(spair_root), "--out", str(out), "--limit", "1", *flags,
                       "-q"]) == 0  # fmt: skip
    sd = _json(out / "config.json")["pipeline"]["sd"]
    assert (
        sd["unet_weights"] == "org/unet:w.safetensors" and sd["noise"] is False and sd["seed"] == 7
    )
    match = build_parser().parse_args(["match", "a", "b", *flags[:3], "--seed", "7"])
    assert loads[0]["config"] == resolve_args(match).config


def test_dino_frame_100_is_refused_before_loading_and_before_out_exists(
    spair_root, tmp_path, loads, capsys
) -> None:
    from sdcorr.cli import main

    out = tmp_path / "o"
    for run in (lambda a: spair_main(a), lambda a: main(["eval", "--dataset", "spair", *a])):
        assert run(["--root", str(spair_root), "--out", str(out), "--dino-frame", "100"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --dino-frame must be positive and a multiple of")
        assert err.count("\n") == 1 and not out.exists() and loads == []


def test_sdcorr_eval_help_lists_the_shared_options(capsys) -> None:
    from sdcorr.cli import main

    assert main(["eval", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--dataset", "--unet-weights", "--no-noise", "--flip-align", "--soft-argmax",
                 "--sd-seed", "--cache-dir"):  # fmt: skip
        assert flag in text
