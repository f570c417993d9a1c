"""Snapshots under the faults users hit: retention (``snapshot_keep``), a full disk (an
injected ENOSPC, and a real one on a small tmpfs where one can be mounted), a read-only
snapshot folder, and the temporary files of killed writes (never taken as the latest,
swept before the next run)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from netspec.cli.main import cli
from netspec.io import atomic
from netspec.io import snapshot as snap
from netspec.io.weights import read_safetensors

NET = """\
name: tiny
solver: {base_lr: 0.1, momentum: 0.9, lr_policy: fixed, max_iter: MAX, snapshot: SNAP, random_seed: 4,
         display: 1EXTRA}
layers:
  - {name: data, type: DummyData, top: [data, label], shape: [[8, 5], [8]],
     data_filler: [{type: gaussian, std: 1}, {type: constant, value: 1}]}
  - {name: ip1, type: InnerProduct, num_output: 6, weight_filler: {type: xavier}}
  - {name: drop, type: Dropout, top: ip1, dropout_ratio: 0.2}
  - {name: ip2, type: InnerProduct, num_output: 3, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
"""


def write_net(folder: Path, max_iter: int, snapshot: int = 1, **solver) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    extra = "".join(f", {k}: {json.dumps(v)}" for k, v in solver.items())
    f = folder / "net.yaml"
    f.write_text(NET.replace("MAX", str(max_iter)).replace("SNAP", str(snapshot)).replace("EXTRA", extra))
    return f


def train(net: Path, *args: str):
    return CliRunner().invoke(cli, ["train", str(net), "-q", *args])


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def iterations(folder: Path, kind: str = snap.STATE_SUFFIX) -> list[int]:
    out = []
    for n in names(folder):
        if n.startswith("tiny_iter_") and n.endswith(kind) and (kind == snap.STATE_SUFFIX or
                                                                not n.endswith(snap.STATE_SUFFIX)):
            out.append(int(n[len("tiny_iter_"):-len(kind)]))
    return sorted(out)


def no_traceback(r) -> None:
    assert "Traceback" not in r.output and not isinstance(r.exception, (AttributeError, TypeError, KeyError)), \
        r.output


def straight(tmp_path: Path, max_iter: int) -> dict:
    d = tmp_path / "straight"
    r = train(write_net(d, max_iter), "--run-dir", str(d / "run"))
    assert r.exit_code == 0, r.output
    return read_safetensors(d / "run" / f"tiny_iter_{max_iter}.safetensors")[0]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ---- fault injection ---------------------------------------------------------------------

class _FullDisk:
    """A file whose write puts some bytes on disk and then fails as a full disk does."""

    def __init__(self, f, path):
        self._f, self._path = f, path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False

    def write(self, data):
        self._f.write(bytes(data)[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self._path))

    def __getattr__(self, name):
        return getattr(self._f, name)


def fail_writes(monkeypatch, match, code: int = errno.ENOSPC) -> list[str]:
    """Make the atomic writer's writes of temporary files for final names that ``match(name)``
    accepts fail with ``code``; returns the list of names that failed."""
    failed: list[str] = []
    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        target = atomic.temp_target(path)
        if target is not None and match(target[0]) and "w" in mode:
            failed.append(target[0])
            if code == errno.ENOSPC:
                return _FullDisk(real_open(path, mode, *args, **kwargs), path)
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", fake_open, raising=False)
    return failed


# ---- retention ---------------------------------------------------------------------------

def test_snapshot_keep_keeps_the_newest_and_logs_what_it_removed(tmp_path):
    net = write_net(tmp_path, 8, snapshot_keep=3)
    run = tmp_path / "run"
    run.mkdir()
    # another prefix's snapshot in the same folder is not this run's to remove; a weights
    # file whose state was never written (a kill between the two writes) is
    (run / "other_iter_1.safetensors").write_bytes(b"x")
    (run / "other_iter_1.solverstate.safetensors").write_bytes(b"x")
    (run / "tiny_iter_0.safetensors").write_bytes(b"x")
    r = train(net, "--run-dir", str(run))
    assert r.exit_code == 0, r.output
    assert iterations(run) == [6, 7, 8] and iterations(run, ".safetensors") == [6, 7, 8]
    assert "other_iter_1.safetensors" in names(run) and "other_iter_1.solverstate.safetensors" in names(run)
    assert "tiny_iter_0.safetensors" not in names(run)
    log = (run / "train.log").read_text()
    assert "Snapshot retention (snapshot_keep: 3): removed tiny_iter_0.safetensors; kept iteration 1\n" in log
    assert ("Snapshot retention (snapshot_keep: 3): removed tiny_iter_1.solverstate.safetensors, "
            "tiny_iter_1.safetensors; kept iterations 4, 3, 2") in log
    assert ("Snapshot retention (snapshot_keep: 3): removed tiny_iter_5.solverstate.safetensors, "
            "tiny_iter_5.safetensors; kept iterations 8, 7, 6") in log
    for it in (6, 7, 8):
        snap.read_state(run / f"tiny_iter_{it}.solverstate.safetensors")
    assert same(read_safetensors(run / "tiny_iter_8.safetensors")[0], straight(tmp_path, 8))


def test_snapshot_keep_counts_by_write_order_and_may_change_on_resume(tmp_path):
    """Resumed from an older snapshot, the run keeps what it writes now, not the snapshots of
    higher iterations written before (which it is about to write again)."""
    net = write_net(tmp_path, 6)
    run = tmp_path / "run"
    assert train(net, "--run-dir", str(run)).exit_code == 0
    assert iterations(run) == [1, 2, 3, 4, 5, 6]
    write_net(tmp_path, 5, snapshot_keep=2)
    r = train(net, "--run-dir", str(run), "--resume", str(run / "tiny_iter_3.solverstate.safetensors"))
    assert r.exit_code == 0, r.output
    assert iterations(run) == [4, 5]
    assert snap.latest_state([run]).name == "tiny_iter_5.solverstate.safetensors"
    assert "kept iterations 4, 6" in r.output and "kept iterations 5, 4" in r.output


def test_snapshot_keep_must_be_a_count(tmp_path):
    r = train(write_net(tmp_path, 2, snapshot_keep=-1))
    assert r.exit_code == 1
    assert "snapshot_keep" in r.output and "net.yaml" in r.output
    no_traceback(r)


def test_retain_keeps_the_one_just_written_even_when_older_files_are_newer(tmp_path):
    prefix = tmp_path / "x"
    for it in (3, 1, 2):     # written in this order: 2 is the newest file
        snap.weights_path(prefix, it).write_bytes(b"w")
        snap.state_path(prefix, it).write_bytes(b"s")
        os.utime(snap.state_path(prefix, it), ns=(it * 10 ** 9 if it != 2 else 10 ** 10,) * 2)
    removed, kept, failed = snap.retain(prefix, 1, current=3)
    assert kept == [3] and not failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_iter_3.safetensors", "x_iter_3.solverstate.safetensors"]
    assert [p.name for p in removed][:2] == ["x_iter_1.solverstate.safetensors", "x_iter_1.safetensors"]


# ---- a full disk -------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["weights", "state"])
def test_full_disk_stops_with_a_clear_error_and_keeps_the_previous_snapshot(tmp_path, monkeypatch, which):
    net = write_net(tmp_path, 6)
    run = tmp_path / "run"
    suffix = snap.STATE_SUFFIX if which == "state" else ".safetensors"
    failed = fail_writes(monkeypatch, lambda n: n == f"tiny_iter_4{suffix}")
    r = train(net, "--run-dir", str(run))
    assert failed == [f"tiny_iter_4{suffix}"]
    assert r.exit_code == 1, r.output
    no_traceback(r)
    msg = " ".join(r.output.split())
    assert (f"cannot write the snapshot of iteration 4 to {run}/tiny_iter_4{suffix}: "
            f"No space left on device (the disk or quota is full); the last good snapshot, "
            f"{run}/tiny_iter_3.solverstate.safetensors, is kept") in msg
    assert "snapshot_failure: continue" in msg and "--resume latest" in msg
    # nothing of iteration 4 is left: no temporary file, no weights file without its state
    assert [n for n in names(run) if "iter_4" in n] == []
    assert iterations(run) == [1, 2, 3]
    snap.read_state(run / "tiny_iter_3.solverstate.safetensors")
    assert "error: cannot write the snapshot of iteration 4" in (run / "train.log").read_text()
    # the disk has room again: --resume latest finishes the run as if nothing happened
    monkeypatch.undo()
    r = train(net, "--run-dir", str(run), "--resume", "latest")
    assert r.exit_code == 0, r.output
    assert "tiny_iter_3.solverstate.safetensors" in r.output
    assert same(read_safetensors(run / "tiny_iter_6.safetensors")[0], straight(tmp_path, 6))


@pytest.mark.parametrize("how", ["solver", "flag"])
def test_full_disk_with_continue_trains_on_and_retries_at_the_next_snapshot(tmp_path, monkeypatch, how):
    net = write_net(tmp_path, 6, **({"snapshot_failure": "continue"} if how == "solver" else {}))
    run = tmp_path / "run"
    failed = fail_writes(monkeypatch, lambda n: n.startswith(("tiny_iter_2.", "tiny_iter_3.solverstate")))
    r = train(net, "--run-dir", str(run), *(["--on-snapshot-failure", "continue"] if how == "flag" else []))
    assert r.exit_code == 0, r.output
    assert failed == ["tiny_iter_2.safetensors", "tiny_iter_3.solverstate.safetensors"]
    assert iterations(run) == [1, 4, 5, 6] and iterations(run, ".safetensors") == [1, 4, 5, 6]
    out = " ".join(r.output.split())
    assert ("warning: cannot write the snapshot of iteration 2 to " in out and "the last good snapshot, "
            f"{run}/tiny_iter_1.solverstate.safetensors, is kept; training goes on (snapshot_failure: continue)"
            in out)
    assert "the last good snapshot, " + f"{run}/tiny_iter_1.solverstate.safetensors, is kept; training goes" in \
        out.split("iteration 3 to", 1)[1]
    assert ("warning: 2 snapshot(s) could not be written (iterations 2, 3; snapshot_failure: continue); the final "
            f"one is {run}/tiny_iter_6.solverstate.safetensors Optimization Done.") in out
    monkeypatch.undo()
    assert same(read_safetensors(run / "tiny_iter_6.safetensors")[0], straight(tmp_path, 6))


def test_a_failed_final_snapshot_is_an_error_even_with_continue(tmp_path, monkeypatch):
    net = write_net(tmp_path, 5, snapshot=2, snapshot_failure="continue")
    run = tmp_path / "run"
    fail_writes(monkeypatch, lambda n: n.startswith("tiny_iter_5."))
    r = train(net, "--run-dir", str(run))
    assert r.exit_code == 1, r.output
    no_traceback(r)
    out = " ".join(r.output.split())
    assert "cannot write the snapshot of iteration 5" in out and "final snapshot" in out
    assert f"{run}/tiny_iter_4.solverstate.safetensors, is kept" in out
    assert iterations(run) == [2, 4]


def test_the_cli_flag_beats_the_solver_field(tmp_path, monkeypatch):
    net = write_net(tmp_path, 4, snapshot_failure="continue")
    fail_writes(monkeypatch, lambda n: n.startswith("tiny_iter_2."))
    r = train(net, "--run-dir", str(tmp_path / "run"), "--on-snapshot-failure", "stop")
    assert r.exit_code == 1 and "cannot write the snapshot of iteration 2" in r.output
    r = train(net, "--run-dir", str(tmp_path / "run"), "--on-snapshot-failure", "sometimes")
    assert r.exit_code == 2 and "'stop', 'continue'" in r.output


# ---- read-only folders -------------------------------------------------------------------

def test_a_read_only_snapshot_folder_is_found_before_training(tmp_path, monkeypatch):
    net = write_net(tmp_path, 4)
    run = tmp_path / "run"
    fail_writes(monkeypatch, lambda n: n == "netspec-probe", code=errno.EROFS)
    r = train(net, "--run-dir", str(run))
    assert r.exit_code == 1, r.output
    no_traceback(r)
    out = " ".join(r.output.split())
    assert (f"cannot write snapshots to {run}: Read-only file system (the folder is on a read-only file "
            f"system)") in out and "writable folder" in out
    assert "Iteration 0" not in out and iterations(run) == []


@pytest.mark.skipif(os.name != "posix" or (hasattr(os, "geteuid") and os.geteuid() == 0),
                    reason="root writes into a folder whatever its mode")
def test_a_folder_without_write_permission_is_found_before_training(tmp_path):
    net = write_net(tmp_path, 4, snapshot_prefix="snaps/tiny")
    (tmp_path / "snaps").mkdir()
    (tmp_path / "snaps").chmod(0o555)
    try:
        r = train(net, "--run-dir", str(tmp_path / "run"))
    finally:
        (tmp_path / "snaps").chmod(0o755)
    assert r.exit_code == 1 and "Permission denied (the folder is not writable by this user)" in r.output


# ---- temporary files ---------------------------------------------------------------------

def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temporary_and_unreadable_files_are_never_taken_as_the_latest(tmp_path):
    net = write_net(tmp_path, 4)
    run = tmp_path / "run"
    assert train(net, "--run-dir", str(run)).exit_code == 0
    gone = dead_pid()
    # a killed writer's temporary files, newer and of a higher iteration than any snapshot
    stale_state = run / f".tiny_iter_9.solverstate.safetensors.tmp{gone}"
    stale_weights = run / f".tiny_iter_9.safetensors.tmp{gone}"
    stale_state.write_bytes((run / "tiny_iter_4.solverstate.safetensors").read_bytes()[:100])
    stale_weights.write_bytes(b"half")
    live = run / f".tiny_iter_8.solverstate.safetensors.tmp{os.getpid()}"   # a writer still at work
    live.write_bytes(b"")
    unrelated = run / f".notes.txt.tmp{gone}"                               # not a snapshot's
    unrelated.write_bytes(b"")
    # a state under its final name that lost its data (copied by hand, a power cut) is skipped
    (run / "tiny_iter_7.solverstate.safetensors").write_bytes(b"\0" * 10)
    assert snap.stale_temps(run) == sorted([stale_state, stale_weights])
    assert snap.latest_state([run]).name == "tiny_iter_7.solverstate.safetensors"
    write_net(tmp_path, 6)
    r = train(net, "--run-dir", str(run), "--resume", "latest")
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert f"Removed 2 temporary file(s) of interrupted snapshot writes in {run}" in out
    assert "--resume latest skips" in out and "tiny_iter_7.solverstate.safetensors" in out
    assert f"Restoring previous solver status from {run}/tiny_iter_4.solverstate.safetensors" in out
    assert not stale_state.exists() and not stale_weights.exists()
    assert live.exists() and unrelated.exists()
    assert same(read_safetensors(run / "tiny_iter_6.safetensors")[0], straight(tmp_path, 6))


def test_no_readable_state_is_the_newest_ones_error(tmp_path):
    net = write_net(tmp_path, 4)
    run = tmp_path / "run"
    run.mkdir()
    (run / "tiny_iter_3.solverstate.safetensors").write_bytes(b"\0" * 3)
    (run / f".tiny_iter_4.solverstate.safetensors.tmp{dead_pid()}").write_bytes(b"")
    r = train(net, "--run-dir", str(run), "--resume", "latest")
    assert r.exit_code == 1
    no_traceback(r)
    assert "tiny_iter_3.solverstate.safetensors" in r.output and "too short" in r.output


def test_temporary_names_are_exactly_the_atomic_writers(tmp_path):
    assert atomic.is_temp(".x_iter_1.safetensors.tmp12")
    assert atomic.temp_target(".x_iter_1.safetensors.tmp12") == ("x_iter_1.safetensors", 12)
    # a prefix that happens to start with a dot and hold ".tmp" is a snapshot like any other
    assert not atomic.is_temp(".tmpnet_iter_1.solverstate.safetensors")
    d = tmp_path / "d"
    d.mkdir()
    (d / ".tmpnet_iter_1.solverstate.safetensors").write_bytes(b"s")
    assert snap.find_states([d]) == [d / ".tmpnet_iter_1.solverstate.safetensors"]


def test_atomic_write_failure_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    atomic.atomic_write(target, b"old")
    fail_writes(monkeypatch, lambda n: n == "a.bin")
    with pytest.raises(OSError) as e:
        atomic.atomic_write(target, b"new content")
    assert e.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old" and names(tmp_path) == ["a.bin"]


# ---- a real small file system (where a tmpfs can be mounted: root on Linux) ----------------

@pytest.fixture
def small_fs(tmp_path):
    mounted: list[Path] = []

    def make(size_kb: int, read_only: bool = False) -> Path:
        if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root on Linux")
        d = tmp_path / f"fs{len(mounted)}"
        d.mkdir()
        opts = f"size={size_kb}k" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_a_really_full_disk(tmp_path, small_fs, monkeypatch):
    """Snapshots alone on a tmpfs with room for three: without retention the run stops at the
    fourth with ENOSPC and the third intact; with snapshot_keep: 2 it finishes in the same room."""
    fs = small_fs(40)
    monkeypatch.chdir(tmp_path)     # the run folder (logs) is runs/tiny/<stamp>, off the small disk
    net = write_net(tmp_path / "a", 12, snapshot_prefix=str(fs / "tiny"))
    r = train(net)
    assert r.exit_code == 1, r.output
    no_traceback(r)
    out = " ".join(r.output.split())
    assert "No space left on device (the disk or quota is full)" in out
    its = iterations(fs)
    assert 1 <= len(its) < 12 and its == list(range(1, len(its) + 1))
    assert f"the last good snapshot, {fs}/tiny_iter_{its[-1]}.solverstate.safetensors, is kept" in out
    assert not [n for n in names(fs) if atomic.is_temp(n)]
    snap.read_state(fs / f"tiny_iter_{its[-1]}.solverstate.safetensors")
    for n in names(fs):
        os.unlink(fs / n)
    net = write_net(tmp_path / "b", 12, snapshot_prefix=str(fs / "tiny"), snapshot_keep=2)
    r = train(net)
    assert r.exit_code == 0, r.output
    assert iterations(fs) == [11, 12]


def test_a_read_only_file_system(tmp_path, small_fs, monkeypatch):
    fs = small_fs(64, read_only=True)
    monkeypatch.chdir(tmp_path)     # --run-dir would move the snapshots off the read-only folder
    r = train(write_net(tmp_path, 3, snapshot_prefix=str(fs / "tiny")))
    assert r.exit_code == 1 and "(the folder is on a read-only file system)" in " ".join(r.output.split())


def test_little_free_space_is_warned_about_before_training(tmp_path, monkeypatch):
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 ** 6, 10 ** 6 - 4096, 4096))
    r = train(write_net(tmp_path, 1), "--run-dir", str(tmp_path / "run"))
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert f"warning: only 4 KiB free in {tmp_path / 'run'}, and one snapshot takes about" in out
    assert out.index("free in") < out.index("Iteration 0")


def test_a_log_file_that_cannot_be_written_does_not_stop_the_run(tmp_path):
    from netspec.solvers.runlog import RunLog

    shown: list[str] = []
    log = RunLog(tmp_path, shown.append)
    log.info("one")
    real = log._text

    class Full:
        name = real.name

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

        def close(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    log._text = Full()
    log.info("two")
    log.info("three")
    log.record(iter=1, name="loss", value=1.0)
    log.close()
    real.close()
    assert shown[:2] == ["one", "two"] and shown[-1] == "three"
    assert [s for s in shown if s.startswith("warning: cannot write")] == [
        f"warning: cannot write {tmp_path / 'train.log'}: No space left on device; it is no longer written "
        f"(this run's lines still come here)"]
    assert (tmp_path / "train.log").read_text().endswith("netspec] one\n")
    assert json.loads((tmp_path / "log.jsonl").read_text())["iter"] == 1


def test_a_full_disk_that_also_holds_the_logs(tmp_path, small_fs):
    """The run folder itself on the small disk, snapshot_failure: continue: the logs stop being
    written with a warning, training goes on, and the final snapshot that cannot be written is
    the one error."""
    fs = small_fs(24)
    r = train(write_net(tmp_path, 12, snapshot_failure="continue"), "--run-dir", str(fs / "run"))
    assert r.exit_code == 1, r.output
    no_traceback(r)
    out = " ".join(r.output.split())
    assert "cannot write the snapshot of iteration 12" in out and "this was the final snapshot" in out
    assert "training goes on (snapshot_failure: continue)" in out
    its = iterations(fs / "run")
    assert its and f"the last good snapshot, {fs}/run/tiny_iter_{its[-1]}.solverstate.safetensors, is kept" in out
    snap.read_state(fs / "run" / f"tiny_iter_{its[-1]}.solverstate.safetensors")
    assert not [n for n in names(fs / "run") if atomic.is_temp(n)]
