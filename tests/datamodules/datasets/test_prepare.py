"""The prepare CLI: a run killed half-way resumes without redoing finished clips."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.datamodules import fixtures

REPO = Path(__file__).resolve().parents[3]
RUN = ("import sys; from datamodules import face; from tests.datamodules import fixtures; "
       "face.detect_face = fixtures.fake_detect_face; from experiments.prepare import main; sys.exit(main(sys.argv[1:]))")


def _tree(root: Path, clips: int) -> Path:
    base = root / "FakeAVCeleb_v1.2"
    lines = ["source,target1,target2,method,category,type,race,gender,path,"]
    for n in range(clips):
        folder = f"RealVideo-RealAudio/African/men/id{n:05d}"
        lines.append(f"id{n:05d},-,-,real,A,RealVideo-RealAudio,African,men,00001.mp4,FakeAVCeleb/{folder}")
        fixtures.write_clip(base / folder / "00001.mp4", seconds=6.0, size=(128, 128), freq=200 + 20 * n, seed=n)
    (base / "meta_data.csv").write_text("\n".join(lines) + "\n")
    return root


def _prepare(root: Path, cache: Path, *extra: str) -> subprocess.Popen:
    args = ["--dataset", "fakeavceleb", "--root", str(root), "--cache", str(cache), "--image-size", "64",
            "--no-progress", "--english-only", "false", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", RUN, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_killed_run_resumes(tmp_path):
    root, cache = _tree(tmp_path / "fake", clips=8), tmp_path / "cache"
    proc = _prepare(root, cache)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cache.glob("clips/fakeavceleb/*/meta.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.parent.name: p.stat().st_mtime_ns for p in cache.glob("clips/fakeavceleb/*/meta.json")}
    assert 2 <= len(done) < 8, "the run should have been killed half-way"
    rerun = _prepare(root, cache)
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output
    after = {p.parent.name: p.stat().st_mtime_ns for p in cache.glob("clips/fakeavceleb/*/meta.json")}
    assert len(after) == 8 and all(after[k] == v for k, v in done.items())  # finished clips not redone
    assert f"{len(done)} already done" in output
    assert not list(cache.glob(".tmp-*"))  # the killed clip left nothing behind


def _children(pid: int) -> set[int]:
    """Pids of the live processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, ...
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper counts as ended)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow  # spawning two workers that import torch takes ~30 s on 2 busy cores
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process parents from /proc (Linux)")
def test_workers_exit_when_the_prepare_process_is_killed(tmp_path):
    root, cache = _tree(tmp_path / "fake", clips=6), tmp_path / "cache"
    proc = _prepare(root, cache, "--workers", "2")
    deadline = time.time() + 120
    workers: set[int] = set()
    # wait until both workers are busy with a clip (their temporary clip folders exist)
    while time.time() < deadline and (len(workers) < 2 or len(list(cache.glob(".tmp-*"))) < 2):
        workers |= _children(proc.pid)
        time.sleep(0.05)
    assert proc.poll() is None and len(workers) >= 2, "the workers should have started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 5
    while time.time() < deadline and any(_running(pid) for pid in workers):
        time.sleep(0.1)
    left = [pid for pid in workers if _running(pid)]
    for pid in left:  # do not leave them to the rest of the test run
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the killed prepare run still running: {left}"


def test_config_file_and_flags(tmp_path, monkeypatch):
    import pytest

    from experiments.prepare import parse_args

    config = tmp_path / "prepare.yaml"
    config.write_text("dataset: hdtf\nroot: /data/HDTF\nworkers: 4\nlitdata-output: s3://bucket/hdtf\n")
    args = parse_args(["--config", str(config), "--workers", "2"])
    assert (args.dataset, args.root, args.workers, args.litdata_output) == ("hdtf", "/data/HDTF", 2, "s3://bucket/hdtf")
    monkeypatch.setenv("NFY_CELEBVHQ", "/data/celebv")
    assert parse_args(["--dataset", "celebvhq"]).root == "/data/celebv"
    config.write_text("dataset: hdtf\nroots: /typo\n")
    with pytest.raises(SystemExit):
        parse_args(["--config", str(config)])
    monkeypatch.delenv("NFY_VOXCELEB", raising=False)
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "voxceleb"])


def test_root_not_set_is_a_clear_error():
    import pytest

    from datamodules.hdtf import HDTFDataModule

    with pytest.raises(ValueError, match="root is not set"):
        HDTFDataModule(cache_dir="unused").discover_sources()
