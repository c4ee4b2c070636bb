"""``sdcorr match --pairs/--out-dir``, ``--flow`` and ``--pca`` with tiny models."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdcorr.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "images"
A, B = str(EXAMPLES / "astronaut.jpg"), str(EXAMPLES / "grace_hopper.jpg")  # 512x512, 512x600
DOG = (
    REPO / "tests" / "data" / "spair-mini" / "SPair-71k" / "JPEGImages" / "dog" / "2009_001225.jpg"
)
SMALL = ["--sd-frame", "256", "--sd-tile", "128", "--dino-frame", "224", "--device", "cpu"]


def _models(tiny_models) -> list[str]:
    return ["--dino-model", str(tiny_models["dino"]), "--sd-model", str(tiny_models["sd"])]


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    """Three pairs over three images, relative paths, a comment, a blank line and a quoted path."""
    imgs = tmp_path / "in" / "imgs"
    imgs.mkdir(parents=True)
    for src, name in ((A, "astro.jpg"), (B, "grace.jpg"), (DOG, "dog one.jpg")):
        shutil.copy(src, imgs / name)
    f = tmp_path / "in" / "pairs.txt"
    f.write_text(
        "# A B\nimgs/astro.jpg imgs/grace.jpg\n\nimgs/grace.jpg 'imgs/dog one.jpg'\n"
        "'imgs/dog one.jpg' imgs/astro.jpg  # back to the start\n"
    )
    return f


@pytest.mark.slow
def test_pairs_extract_each_image_once_and_equal_single_runs(
    pairs_file, tiny_models, tmp_path, capsys
) -> None:
    pts = tmp_path / "pts.json"
    pts.write_text(json.dumps([[10, 20], [200.5, 100], [300, 250]]))
    out = tmp_path / "out"
    common = ["--points", str(pts), "--preset", "dino", "--dense-grid", "40", *SMALL,
              *_models(tiny_models)]  # fmt: skip
    rc = main(["-q", "match", "--pairs", str(pairs_file), "--out-dir", str(out),
               "--flow", "flow.npz", "--pca", "pca.png", *common])  # fmt: skip
    assert rc == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("3 pairs: 3 done, 0 skipped, 0 failed; 3 images extracted; 9 files "
                              f"written to {out}; ")  # fmt: skip
    names = ["astro-grace", "grace-dog one", "dog one-astro"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}{suffix}" for n in names for suffix in (".json", "-flow.npz", "-pca.png")]
        + ["config.json", "matches.jsonl", "timing.json"]
    )
    table = [json.loads(line) for line in (out / "matches.jsonl").read_text().splitlines()]
    assert [(r["pair"], r["line"]) for r in table] == list(zip(names, (2, 4, 5), strict=True))
    imgs = pairs_file.parent / "imgs"
    for name, (a, b) in zip(
        names, [("astro", "grace"), ("grace", "dog one"), ("dog one", "astro")], strict=True
    ):
        single = tmp_path / f"single-{name}.json"
        args = [str(imgs / f"{a}.jpg"), str(imgs / f"{b}.jpg"), "--json", str(single)]
        assert main(["-q", "match", *args, *common]) == 0
        batch = json.loads((out / f"{name}.json").read_text())
        assert batch == json.loads(single.read_text())
        record = next(r for r in table if r["pair"] == name)
        assert {**record, "config": batch["config"]} == {"pair": name, "line": record["line"],
                                                           **batch}  # fmt: skip
    with np.load(out / "astro-grace-flow.npz") as z:
        assert z["flow"].shape == (600, 512, 2)
    assert Image.open(out / "grace-dog one-pca.png").size == (512 + 500, 600)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "imgs/astro.jpg imgs/grace.jpg\nimgs/astro.jpg\n",
            "pairs.txt:2: expected two image paths",
        ),
        ("imgs/astro.jpg imgs/grace.jpg\n\nimgs/astro.jpg nope.jpg\n", "pairs.txt:3: "),
        ("imgs/astro.jpg 'imgs/grace.jpg\n", "pairs.txt:1: No closing quotation"),
        ("# nothing\n", "pairs file has no pairs"),
    ],
)
def test_bad_pairs_line_is_named_before_any_model_loads(
    pairs_file, tmp_path, capsys, monkeypatch, content, message
) -> None:
    def no_models(*_args, **_kwargs):
        raise AssertionError("models must not load for a bad pairs file")

    monkeypatch.setattr("sdcorr.pipeline.SDDino.from_pretrained", no_models)
    pairs_file.write_text(content)
    out = tmp_path / "out"
    assert main(["match", "--pairs", str(pairs_file), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_points_off_one_pairs_image_names_its_line(pairs_file, tmp_path, capsys) -> None:
    pts = tmp_path / "pts.json"
    pts.write_text(json.dumps([[505, 590]]))  # on grace (512x600), off astro (512x512)
    pairs_file.write_text("imgs/grace.jpg imgs/astro.jpg\nimgs/astro.jpg imgs/grace.jpg\n")
    rc = main(["match", "--pairs", str(pairs_file), "--out-dir", str(tmp_path / "o"),
               "--points", str(pts)])  # fmt: skip
    assert rc == 2 and "pairs.txt:2: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["match", A, B, "--flow", "f.npy"], "--flow must end in .npz"),
        (["match", A, B, "--pca", "p.jpg"], "--pca must end in .png"),
        (["match", A, "--json", "m.json"], "give two images A B"),
        (["match", A, B, "--pairs", "p.txt", "--out-dir", "o"], "not both"),
        (["match", "--pairs", "p.txt"], "--pairs needs --out-dir"),
        (["match", "--pairs", "p.txt", "--out-dir", "o", "--flow", "f.npy"], "--flow must end in"),
        (["match", "--pairs", "p.txt", "--out-dir", "o", "--pca", "p.jpg"], "--pca must end in"),
        (["match", A, B, "--json", "m.json", "--resume"], "--resume continues a --pairs run"),
    ],
)
def test_output_option_errors(argv, message, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_flow_and_pca_files(tiny_models, tmp_path) -> None:
    flow, pca = tmp_path / "flow.npz", tmp_path / "pca.png"
    rc = main(["-q", "match", A, B, "--flow", str(flow), "--pca", str(pca), "--dense-grid", "40",
               "--preset", "dino", *SMALL, *_models(tiny_models)])  # fmt: skip
    assert rc == 0
    with np.load(flow) as z:
        assert z["flow"].shape == (600, 512, 2) and z["flow"].dtype == np.float32
        assert z["valid"].shape == (600, 512) and z["valid"].dtype == bool
        assert z["score"].shape == (600, 512) and z["score"].dtype == np.float32
        assert (z["flow"][..., 0] >= 0).all() and (z["flow"][..., 0] <= 511).all()
        assert (z["flow"][..., 1] >= 0).all() and (z["flow"][..., 1] <= 511).all()  # in A
        assert z["valid"].all() and (z["score"] <= 1 + 1e-5).all()
    img = np.asarray(Image.open(pca))
    assert img.shape == (600, 1024, 3)
    assert (img[512:, :512] == 0).all()  # A is shorter: black below it


def test_flow_of_identical_images_stays_in_each_pixels_cell(tiny_models, tmp_path) -> None:
    """Same image twice: every pixel of B maps to the centre of its own cell in A."""
    flow, pca = tmp_path / "flow.npz", tmp_path / "pca.png"
    rc = main(["-q", "match", A, A, "--flow", str(flow), "--pca", str(pca), "--dense-grid", "0",
               "--preset", "dino", *SMALL, *_models(tiny_models)])  # fmt: skip
    assert rc == 0
    with np.load(flow) as z:
        f, score = z["flow"], z["score"]
    ys, xs = np.mgrid[0:512, 0:512]
    cell = 14 * 512 / 224  # one patch-14 cell of the 224 frame, in A's pixels (32)
    assert np.abs(f[..., 0] - xs).max() <= cell / 2 + 0.5
    assert np.abs(f[..., 1] - ys).max() <= cell / 2 + 0.5
    np.testing.assert_allclose(score, 1.0, atol=1e-5)
    img = np.asarray(Image.open(pca))
    np.testing.assert_array_equal(img[:, :512], img[:, 512:])


class _CountingCalls:
    """Wraps a function or an extractor's ``__call__``: records each call's images."""

    def __init__(self, fn) -> None:
        self.fn, self.images = fn, []

    def method(self):
        def call(ext, images, *args, **kwargs):
            self.images += [np.asarray(im).tobytes() for im in images]
            return self.fn(ext, images, *args, **kwargs)

        return call


def test_pairs_with_flip_and_auto_masks_extract_each_image_and_mirror_once(
    pairs_file, tiny_models, tmp_path, capsys, monkeypatch
) -> None:
    from sdcorr.features.dino import ViTExtractor
    from sdcorr.flip import mirror_image
    from sdcorr.image import load_image

    counter = _CountingCalls(ViTExtractor.__call__)
    monkeypatch.setattr(ViTExtractor, "__call__", counter.method())
    out = tmp_path / "out"
    rc = main(["-q", "match", "--pairs", str(pairs_file), "--out-dir", str(out), "--flip-align",
               "--mask-a", "auto", "--mask-b", "auto", "--preset", "dino", "--dense-grid", "40",
               "--flow", "flow.npz", *SMALL, *_models(tiny_models)])  # fmt: skip
    assert rc == 0
    imgs = [load_image(pairs_file.parent / "imgs" / n) for n in ("astro.jpg", "grace.jpg",
                                                                  "dog one.jpg")]  # fmt: skip
    want = [np.asarray(im).tobytes() for im in imgs]
    want += [np.asarray(mirror_image(im)).tobytes() for im in imgs]  # every image is an A once
    assert sorted(counter.images) == sorted(want)  # each image once, each mirror once
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("3 pairs: 3 done, 0 skipped, 0 failed; 3 images and 3 mirrors "
                              "extracted; 6 files written to ")  # fmt: skip
    for name in ("astro-grace", "grace-dog one", "dog one-astro"):
        assert json.loads((out / f"{name}.json").read_text())["config"]["match"]["flip_align"]


def test_single_run_builds_pair_masks_and_flip_decision_once(tiny_models, tmp_path,
                                                            monkeypatch) -> None:  # fmt: skip
    """``--flip-align`` with automatic masks, points and the dense swap: one fused (A, B), one
    fused (mirror(A), B), three masks (A, B, mirror(A)) and one flip decision."""
    from sdcorr import masks, pair
    from sdcorr.pipeline import SDDino

    calls = {"fuse": 0, "decide": 0, "mask": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(SDDino, "fuse", counting("fuse", SDDino.fuse))
    monkeypatch.setattr(pair, "decide", counting("decide", pair.decide))
    monkeypatch.setattr(masks, "foreground_mask", counting("mask", masks.foreground_mask))
    rc = main(["-q", "match", A, B, "--flip-align", "--mask-a", "auto", "--mask-b", "auto",
               "--out", str(tmp_path / "s.png"), "--json", str(tmp_path / "m.json"),
               "--flow", str(tmp_path / "f.npz"), "--preset", "dino", "--dense-grid", "40",
               *SMALL, *_models(tiny_models)])  # fmt: skip
    assert rc == 0
    assert calls == {"fuse": 2, "decide": 1, "mask": 3}


# ---------------------------------------------------------------------------- issue 19
def _no_models(monkeypatch) -> None:
    def no_models(*_args, **_kwargs):
        raise AssertionError("models must not load")

    monkeypatch.setattr("sdcorr.pipeline.SDDino.from_pretrained", no_models)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--plot", "v.png", "--pca", "v.png"], "--plot and --pca name the same file: v.png"),
        (["--out", "s.png", "--plot", "s.png"], "--out and --plot name the same file: s.png"),
        (["--out", "a/s.png", "--plot", "b/s.png"], "--out and --plot name the same file: s.png"),
    ],
)
def test_pairs_refuse_two_outputs_of_one_file_name_before_models_load(
    pairs_file, tmp_path, capsys, monkeypatch, options, message
) -> None:
    """Per-pair files are named ``<pair>-<file name>``: two options with one file name would
    overwrite each other, so they are refused as a single pair refuses them."""
    _no_models(monkeypatch)
    out = tmp_path / "out"
    assert main(["match", "--pairs", str(pairs_file), "--out-dir", str(out), *options]) == 2
    assert message in _one_error_line(capsys)
    assert not out.exists()


def test_pair_names_never_collide(tiny_models, tmp_path, capsys) -> None:
    """Two pairs whose files would land on one name get distinct names, whichever way the
    names meet: the same stems (``x b`` and ``c/x b``, where the ``-line3`` suffix is already
    taken by a pair of its own) or a pair's name meeting another pair's option file."""
    imgs = tmp_path / "in"
    (imgs / "c").mkdir(parents=True)
    for src, name in ((A, "x.jpg"), (DOG, "c/x.jpg"), (B, "b.jpg"), (DOG, "b-line3.jpg"),
                      (A, "b-p.jpg")):  # fmt: skip
        shutil.copy(src, imgs / name)
    pairs = imgs / "pairs.txt"
    pairs.write_text("x.jpg b-line3.jpg\nx.jpg b.jpg\nc/x.jpg b.jpg\nx.jpg b-p.jpg\n")
    out = tmp_path / "out"
    rc = main(["-q", "match", "--pairs", str(pairs), "--out-dir", str(out), "--plot", "p.json",
               "--preset", "dino", *SMALL, *_models(tiny_models)])  # fmt: skip
    assert rc == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    # three distinct contents (the cache keys images by content)
    assert summary.startswith("4 pairs: 4 done, 0 skipped, 0 failed; 3 images extracted; 8 files")
    run_files = {"config.json", "matches.jsonl", "timing.json"}
    assert len([p for p in out.iterdir() if p.name not in run_files]) == 8  # the count is true
    names = {
        r["pair"]: r for r in map(json.loads, (out / "matches.jsonl").read_text().splitlines())
    }
    assert list(names) == ["x-b-line3", "x-b", "x-b-line3-2", "x-b-p-line4"]
    for name, rec in names.items():  # each pair's files hold that pair
        assert json.loads((out / f"{name}.json").read_text())["image_a"] == rec["image_a"]
        assert (out / f"{name}-p.json").stat().st_size > 0
    assert names["x-b-line3-2"]["image_a"].endswith("c/x.jpg")


@pytest.mark.parametrize("option", ["--out-dir", "--cache-dir"])
@pytest.mark.parametrize("where", ["/proc", "a file", "is a file", "read-only"])
def test_folders_that_cannot_be_created_are_one_line_before_models_load(
    pairs_file, tmp_path, capsys, monkeypatch, option, where
) -> None:
    if where == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    _no_models(monkeypatch)
    blocked = {"/proc": Path("/proc/sdcorr-test-no-such-folder/d")}.get(where, tmp_path / "f" / "d")
    if where in ("a file", "is a file"):
        (tmp_path / "f").write_text("not a folder")
        blocked = tmp_path / "f" if where == "is a file" else blocked
    elif where == "read-only":
        (tmp_path / "f").mkdir(mode=0o555)
    out = tmp_path / "new" / "out"  # created by the run, then removed with its parent
    folders = {"--out-dir": str(blocked), "--cache-dir": None} | {option: str(blocked)}
    if option == "--cache-dir":
        folders["--out-dir"] = str(out)
    argv = ["match", "--pairs", str(pairs_file), "--out-dir", folders["--out-dir"]]
    argv += ["--cache-dir", folders["--cache-dir"]] if folders["--cache-dir"] else []
    before = sorted(tmp_path.rglob("*"))
    assert main(argv) == 2
    assert f"{option} {blocked}" in _one_error_line(capsys)
    assert sorted(tmp_path.rglob("*")) == before  # nothing left behind


def test_single_pair_cache_dir_serves_the_next_run(tiny_models, tmp_path, monkeypatch) -> None:
    from sdcorr.pipeline import SDDino

    calls = []
    extract = SDDino.extract
    monkeypatch.setattr(SDDino, "extract", lambda pipe, images, *a, **k: calls.append(len(images))
                        or extract(pipe, images, *a, **k))  # fmt: skip
    argv = ["-q", "match", A, B, "--preset", "dino", "--cache-dir", str(tmp_path / "features"),
            *SMALL, *_models(tiny_models)]  # fmt: skip
    assert main([*argv, "--json", str(tmp_path / "1.json")]) == 0
    assert calls == [1, 1] and len(list((tmp_path / "features").rglob("*.safetensors"))) == 2
    assert main([*argv, "--json", str(tmp_path / "2.json")]) == 0
    assert calls == [1, 1]  # the second run read both images from the folder
    assert (tmp_path / "1.json").read_text() == (tmp_path / "2.json").read_text()
