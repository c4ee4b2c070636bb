"""``sdcorr match --pairs`` at scale: torchrun shards, resume after a kill, the disk feature cache,
failed pairs and refused reruns (tiny random-weight models, 6 pairs over 4 images)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sdcorr.cli import main
from sdcorr.commands.pairs_file import read_pairs
from sdcorr.outdir import normalise_path
from sdcorr.shards import shard

REPO = Path(__file__).resolve().parents[1]
JPEGS = REPO / "tests" / "data" / "spair-mini" / "SPair-71k" / "JPEGImages"
IMAGES = {
    "astro.jpg": REPO / "examples" / "images" / "astronaut.jpg",
    "grace.jpg": REPO / "examples" / "images" / "grace_hopper.jpg",
    "dog.jpg": JPEGS / "dog" / "2009_001225.jpg",
    "cow.jpg": JPEGS / "cow" / "2007_005797.jpg",
}
# 6 pairs over 4 images; astro is A three times, grace twice (shards group by A)
PAIRS = [("astro", "grace"), ("astro", "dog"), ("grace", "cow"), ("dog", "cow"),
         ("astro", "cow"), ("grace", "dog")]  # fmt: skip
SMALL = ["--sd-frame", "256", "--sd-tile", "128", "--dino-frame", "224", "--device", "cpu"]


def _pairs_text(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"imgs/{a}.jpg imgs/{b}.jpg\n" for a, b in pairs)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``imgs/`` (the 4 images) and ``pairs.txt`` (the 6 pairs)."""
    root = tmp_path_factory.mktemp("batch")
    (root / "imgs").mkdir()
    for name, src in IMAGES.items():
        shutil.copy(src, root / "imgs" / name)
    (root / "pairs.txt").write_text(_pairs_text(PAIRS))
    return root


def _argv(tiny_models, pairs: Path, out: Path, *extra: str) -> list[str]:
    models = ["--dino-model", str(tiny_models["dino"]), "--sd-model", str(tiny_models["sd"])]
    return ["-q", "match", "--pairs", str(pairs), "--out-dir", str(out), *SMALL, *models, *extra]


def _one_thread_main(argv: list[str]) -> int:
    """``main`` on one thread, as the subprocesses below run (same float results)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


class _Extractions:
    """Counts real extractions (``SDDino.extract`` bypasses the cache): ``(sha1, mirrored)``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from sdcorr.image import load_image
        from sdcorr.pipeline import SDDino

        self.calls: list[tuple[str, bool]] = []
        real = SDDino.extract

        def counting(pipe, images, category=None, mirrored=False):
            for im in images:
                self.calls.append((hashlib.sha1(load_image(im).tobytes()).hexdigest(), mirrored))
            return real(pipe, images, category, mirrored)

        monkeypatch.setattr(SDDino, "extract", counting)


@pytest.fixture(scope="module")
def reference(work: Path, tiny_models, tmp_path_factory) -> dict:
    """One uninterrupted single-process run with ``--cache-dir`` (the run the others equal)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    cache = out.parent / "cache"
    assert (
        _one_thread_main(_argv(tiny_models, work / "pairs.txt", out, "--cache-dir", str(cache)))
        == 0
    )
    return {"out": out, "cache": cache, "jsonl": (out / "matches.jsonl").read_bytes()}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_matches_jsonl_holds_every_pair_in_file_order(reference, work) -> None:
    recs = _records(reference["out"] / "matches.jsonl")
    assert [(r["pair"], r["line"]) for r in recs] == [(f"{a}-{b}", i + 1)
                                                      for i, (a, b) in enumerate(PAIRS)]  # fmt: skip
    for rec, (a, b) in zip(recs, PAIRS, strict=True):
        assert rec["image_a"] == str(work / "imgs" / f"{a}.jpg")
        assert (
            len(rec["points_a"])
            == len(rec["points_b"])
            == len(rec["scores"])
            == len(rec["mutual"])
            > 0
        )
        assert rec["flipped"] is False and len(rec["size_a"]) == len(rec["size_b"]) == 2
        per_pair = json.loads((reference["out"] / f"{a}-{b}.json").read_text())
        assert {**rec, "config": per_pair["config"]} == {"pair": rec["pair"], "line": rec["line"],
                                                        **per_pair}  # fmt: skip
    timing = json.loads((reference["out"] / "timing.json").read_text())
    assert timing["total"]["extracted"] == 4 and timing["total"]["done"] == 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


COUNTING = """
import hashlib, os, sys
from sdcorr.image import load_image
from sdcorr.pipeline import SDDino
real = SDDino.extract
def extract(pipe, images, category=None, mirrored=False):
    with open(os.path.join(os.environ["COUNT_DIR"], os.environ.get("RANK", "0")), "a") as f:
        for im in images:
            f.write(hashlib.sha1(load_image(im).tobytes()).hexdigest() + "\\n")
    return real(pipe, images, category, mirrored)
SDDino.extract = extract
from sdcorr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process_and_extract_each_image_once_per_rank(
    reference, work, tiny_models, tmp_path
) -> None:
    script, counts = tmp_path / "counting.py", tmp_path / "counts"
    script.write_text(textwrap.dedent(COUNTING))
    counts.mkdir()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
           "--master-addr=127.0.0.1", f"--master-port={_free_port()}", str(script),
           *_argv(tiny_models, work / "pairs.txt", out)]  # fmt: skip
    proc = subprocess.run(cmd, env={**_env(), "COUNT_DIR": str(counts)}, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _records(out / "matches.jsonl") == _records(reference["out"] / "matches.jsonl")
    assert (out / "matches.jsonl").read_bytes() == reference["jsonl"]
    assert not list(out.glob("matches.rank*"))  # merged away
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith("6 pairs: 6 done, 0 skipped, 0 failed; ") and "on 2 ranks" in summary
    jobs = read_pairs(work / "pairs.txt")
    for rank in (0, 1):  # each rank extracts exactly the images of its shard, each once
        calls = (counts / str(rank)).read_text().split()
        mine = shard(jobs, rank, 2, lambda j: normalise_path(j.image_a))
        want = {_sha1(p) for j in mine for p in (j.image_a, j.image_b)}
        assert sorted(calls) == sorted(want), f"rank {rank}"
    timing = json.loads((out / "timing.json").read_text())
    assert timing["world_size"] == 2 and [r["done"] for r in timing["ranks"]] == [3, 3]
    groups = [{j.image_a for j in shard(jobs, r, 2, lambda j: normalise_path(j.image_a))}
              for r in (0, 1)]  # fmt: skip
    assert not groups[0] & groups[1]  # no template on two ranks


def _sha1(path: Path) -> str:
    from sdcorr.image import load_image

    return hashlib.sha1(load_image(path).tobytes()).hexdigest()


KILLER = """
import os, signal, sys
from sdcorr import records
real = records.JsonlWriter.write
def write(self, obj):
    self.n = getattr(self, "n", 0) + 1
    if self.n == 4:  # killed while writing the 4th record: half a line, then SIGKILL
        import json
        self._f.write(json.dumps(obj)[:40])
        self._f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real(self, obj)
records.JsonlWriter.write = write
from sdcorr.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_killed_run_resumes_only_the_missing_pairs_to_identical_bytes(
    reference, work, tiny_models, tmp_path, monkeypatch, capsys
) -> None:
    out = tmp_path / "out"
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(KILLER))
    proc = subprocess.run([sys.executable, str(script), *_argv(tiny_models, work / "pairs.txt", out)],
                          env=_env(), capture_output=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    lines = (out / "matches.jsonl").read_text().split("\n")
    assert len(lines) == 4 and lines[-1] and not lines[-1].endswith("}")  # 3 records + a torn one
    done = [json.loads(line)["pair"] for line in lines[:3]]
    extractions = _Extractions(monkeypatch)
    built: list[str] = []
    from sdcorr.commands import pair_steps

    build = pair_steps.build

    def counting_build(pipe, inputs):
        built.append(f"{Path(inputs.name_a).stem}-{Path(inputs.name_b).stem}")
        return build(pipe, inputs)

    monkeypatch.setattr(pair_steps, "build", counting_build)
    capsys.readouterr()
    assert _one_thread_main(_argv(tiny_models, work / "pairs.txt", out)) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("6 pairs: 3 done, 3 skipped, 0 failed; ")
    missing = [f"{a}-{b}" for a, b in PAIRS if f"{a}-{b}" not in done]
    assert sorted(built) == sorted(missing)  # only the missing pairs are redone
    want = {_sha1(work / "imgs" / f"{n}.jpg") for m in missing for n in m.split("-")}
    assert sorted(h for h, _ in extractions.calls) == sorted(want)  # their images, each once
    assert (out / "matches.jsonl").read_bytes() == reference["jsonl"]


def test_second_run_with_the_cache_dir_extracts_nothing(
    reference, work, tiny_models, tmp_path, monkeypatch, capsys
) -> None:
    """Another pairs file over the same images (here: the same pairs, reversed) reads every
    image from ``--cache-dir`` and gives the same matches."""
    pairs = work / "reversed.txt"
    pairs.write_text(_pairs_text(PAIRS[::-1]))
    extractions = _Extractions(monkeypatch)
    out = tmp_path / "out"
    argv = _argv(tiny_models, pairs, out, "--cache-dir", str(reference["cache"]))
    assert _one_thread_main(argv) == 0
    assert extractions.calls == []
    assert "; 0 images extracted; " in capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads((out / "timing.json").read_text())["total"]["disk_hits"] == 4
    first = {r["pair"]: {**r, "line": 0} for r in _records(reference["out"] / "matches.jsonl")}
    again = [{**r, "line": 0} for r in _records(out / "matches.jsonl")]
    assert again == [first[f"{a}-{b}"] for a, b in PAIRS[::-1]]


def test_failed_pairs_are_recorded_counted_and_retried(
    work, tiny_models, tmp_path, monkeypatch, capsys
) -> None:
    """An image that turns unreadable after the check fails its pairs: each gets an ``error``
    record in file order, the others are written, the exit status is 3; once the image is
    back, a rerun redoes only the failed pairs."""
    imgs = tmp_path / "imgs"
    shutil.copytree(work / "imgs", imgs)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(_pairs_text(PAIRS))
    from sdcorr.commands import batch

    load = batch.load_pipeline

    def load_then_break_cow(*args, **kwargs):
        (imgs / "cow.jpg").write_bytes(b"not a jpeg any more")
        return load(*args, **kwargs)

    monkeypatch.setattr(batch, "load_pipeline", load_then_break_cow)
    out = tmp_path / "out"
    argv = [*_argv(tiny_models, pairs, out), "--preset", "dino"]
    assert main(argv) == 3
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1].startswith("6 pairs: 3 done, 0 skipped, 3 failed")
    assert f"{pairs}:3: pair failed: " in captured.err
    recs = _records(out / "matches.jsonl")
    failed = [r["pair"] for r in recs if "error" in r]
    assert [r["pair"] for r in recs] == [f"{a}-{b}" for a, b in PAIRS]
    assert failed == ["grace-cow", "dog-cow", "astro-cow"]
    assert all("cow.jpg" in r["error"] and "points_b" not in r for r in recs if "error" in r)
    assert sorted(p.name for p in out.glob("*-*.json")) == sorted(
        f"{n}.json" for n in ("astro-grace", "astro-dog", "grace-dog")
    )
    shutil.copy(IMAGES["cow.jpg"], imgs / "cow.jpg")
    monkeypatch.setattr(batch, "load_pipeline", load)
    assert main(argv) == 0
    assert (
        capsys.readouterr()
        .out.strip()
        .splitlines()[-1]
        .startswith("6 pairs: 3 done, 3 skipped, 0 failed")
    )
    recs = _records(out / "matches.jsonl")
    assert [r["pair"] for r in recs] == [f"{a}-{b}" for a, b in PAIRS]
    assert all("points_b" in r for r in recs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--category", "dog"], "category: None (previous run) != 'dog' (this run)"),
        (["--plot", "p.png"], "outputs.plot: None (previous run) != 'p.png' (this run)"),
        (["--dino-frame", "448"], "pipeline.dino.frame: 224 (previous run) != 448 (this run)"),
        ("pairs", "pairs.sha1: "),
    ],
)
def test_rerun_with_other_settings_is_refused_before_models_load(
    reference, work, tiny_models, tmp_path, monkeypatch, capsys, change, message
) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference["out"], out)
    pairs = work / "pairs.txt"
    if change == "pairs":
        pairs = tmp_path / "pairs.txt"
        pairs.write_text(_pairs_text(PAIRS[:5]))
        shutil.copytree(work / "imgs", tmp_path / "imgs")
        change = []
    monkeypatch.setattr("sdcorr.pipeline.SDDino.from_pretrained", _no_models)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main([*_argv(tiny_models, pairs, out), *change]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err
    assert "use another --out-dir" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_needs_an_earlier_run(work, tiny_models, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("sdcorr.pipeline.SDDino.from_pretrained", _no_models)
    out = tmp_path / "out"
    assert main([*_argv(tiny_models, work / "pairs.txt", out), "--resume"]) == 2
    assert "--resume: " in capsys.readouterr().err and not out.exists()


def test_finished_run_rerun_recomputes_nothing(reference, tiny_models, work, tmp_path,
                                               monkeypatch, capsys) -> None:  # fmt: skip
    out = tmp_path / "out"
    shutil.copytree(reference["out"], out)
    extractions = _Extractions(monkeypatch)
    assert _one_thread_main([*_argv(tiny_models, work / "pairs.txt", out), "--resume"]) == 0
    assert extractions.calls == []
    assert (
        capsys.readouterr()
        .out.strip()
        .splitlines()[-1]
        .startswith("6 pairs: 0 done, 6 skipped, 0 failed; 0 images extracted; 0 files")
    )
    assert (out / "matches.jsonl").read_bytes() == reference["jsonl"]


def _no_models(*_args, **_kwargs):
    raise AssertionError("models must not load")


def test_resume_across_process_counts(reference, work, tiny_models, tmp_path, capsys) -> None:
    """The rank files of a killed 2-rank run (one with a torn last line) are finished by one
    process: only the missing pairs are matched, the table is the uninterrupted run's."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(reference["out"] / "config.json", out / "config.json")
    lines = reference["jsonl"].decode().splitlines(keepends=True)
    (out / "matches.rank0.jsonl").write_text(lines[0] + lines[1])
    (out / "matches.rank1.jsonl").write_text(lines[4] + lines[2][:30])
    assert _one_thread_main(_argv(tiny_models, work / "pairs.txt", out)) == 0
    assert (
        capsys.readouterr()
        .out.strip()
        .splitlines()[-1]
        .startswith("6 pairs: 3 done, 3 skipped, 0 failed; ")
    )
    assert (out / "matches.jsonl").read_bytes() == reference["jsonl"]
    assert not list(out.glob("matches.rank*"))


def _readme_recipe() -> str:
    text = (REPO / "README.md").read_text()
    marker = "<!-- propagation recipe:"
    assert marker in text, "README lost its propagation recipe"
    block = text.split(marker, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert "sdcorr match --pairs" in block
    return block


@pytest.mark.slow
def test_readme_propagation_recipe_runs_as_written(tiny_models, tmp_path) -> None:
    """The README's recipe, run by bash in a folder with ``template.jpg``, ``template.json``
    and ``photos/``; ``sdcorr`` is the CLI of this tree with the tiny models' options added."""
    shutil.copy(IMAGES["astro.jpg"], tmp_path / "template.jpg")
    (tmp_path / "template.json").write_text("[[256, 200], [200, 150], [310, 150]]")
    (tmp_path / "photos").mkdir()
    for name in ("grace.jpg", "dog.jpg", "cow.jpg"):
        shutil.copy(IMAGES[name], tmp_path / "photos" / name)
    models = f"--dino-model {tiny_models['dino']} --sd-model {tiny_models['sd']}"
    define = f'sdcorr() {{ "{sys.executable}" -m sdcorr.cli -q "$@" {models} {" ".join(SMALL)}; }}'
    env = {**_env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", f"{define}\n{_readme_recipe()}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = _records(tmp_path / "propagated" / "matches.jsonl")
    assert [r["image_b"] for r in recs] == [f"photos/{n}.jpg" for n in ("cow", "dog", "grace")]
    assert all(r["points_a"] == [[256, 200], [200, 150], [310, 150]] for r in recs)
    assert all(r["category"] == "dog" and len(r["points_b"]) == 3 for r in recs)
    printed = [line for line in proc.stdout.splitlines() if line.startswith("photos/")]
    assert [line.split(" ", 1)[0] for line in printed] == [r["image_b"] for r in recs]
