"""The model's CPU threads (issue 18): sized to the cores other processes leave free, following the
load between steps, leaving alone what a user fixed; OpenMP's idle threads sleep. The measured
slow-down beside another torch job is in ``benchmarks/bench_load.py`` (not a timed test)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from qupath_camseg import _runtime


@pytest.fixture()
def auto(monkeypatch: pytest.MonkeyPatch):
    """Automatic sizing on (the test suite turns it off), 4 cores, torch's default untouched."""
    before = torch.get_num_threads()
    monkeypatch.delenv("QCAMSEG_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(_runtime, "cpu_count", lambda: 4)
    monkeypatch.setattr(_runtime, "_cgroup_cpus", lambda: None)
    monkeypatch.setattr(_runtime, "_torch_default_threads", lambda torch: 4)
    monkeypatch.setattr(_runtime, "_CPU_THREADS", None)
    monkeypatch.setattr(_runtime, "_LAST_SET", [None])
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


class _Busy:
    """A stand-in for the psutil sampler: ``busy_elsewhere`` returns what the test says."""

    def __init__(self, value: float) -> None:
        self.value = value

    def busy_elsewhere(self) -> float:
        return self.value


def test_threads_are_the_cores_left_free(auto, monkeypatch):
    monkeypatch.setattr(_runtime, "_CpuSampler", lambda: _Busy(2.0))  # a 2-thread job next door
    assert _runtime.configure_cpu_threads("cpu") == 2 and torch.get_num_threads() == 2
    t = _runtime.CpuThreads.__new__(_runtime.CpuThreads)
    t.busy_workers, t._default = 0.0, 4
    assert [t.free(b) for b in (0.0, 0.4, 0.6, 1.5, 3.0, 9.0)] == [4, 4, 3, 3, 1, 1]
    t.busy_workers = 1.0  # two loader workers at half a core each
    assert t.free(0.0) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun ranks on this node: half each
    assert t.free(0.0) == 1 and _runtime._node_share() == 2.0


def test_ticks_follow_the_load_between_steps(auto, monkeypatch):
    busy = _Busy(0.0)
    monkeypatch.setattr(_runtime, "_CpuSampler", lambda: busy)
    assert _runtime.configure_cpu_threads("cpu") == 4
    gov = _runtime._CPU_THREADS[1]
    busy.value = 2.2  # another job starts
    _runtime.cpu_threads_tick()
    assert torch.get_num_threads() == 4  # not yet: re-checked every few seconds only
    gov._next = 0.0
    _runtime.cpu_threads_tick()
    assert torch.get_num_threads() == 2
    busy.value, gov._next = 0.0, 0.0  # it ends
    _runtime.cpu_threads_tick()
    assert torch.get_num_threads() == 4
    torch.set_num_threads(3)  # the caller takes over: the ticks stop
    busy.value, gov._next = 3.0, 0.0
    _runtime.cpu_threads_tick()
    assert torch.get_num_threads() == 3


def test_what_the_user_fixed_is_left_alone(auto, monkeypatch):
    monkeypatch.setattr(_runtime, "_CpuSampler", lambda: _Busy(3.0))
    torch.set_num_threads(3)  # set by the caller: not torch's default, not ours
    assert _runtime.configure_cpu_threads("cpu") == 3
    monkeypatch.setattr(_runtime, "_CPU_THREADS", None)
    torch.set_num_threads(4)
    monkeypatch.setenv("QCAMSEG_THREADS", "2")
    assert _runtime.configure_cpu_threads("cpu") == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv("QCAMSEG_THREADS", "off")
    torch.set_num_threads(4)
    assert _runtime.configure_cpu_threads("cpu") == 4
    monkeypatch.delenv("QCAMSEG_THREADS")
    assert _runtime.configure_cpu_threads("cuda:0") == 4  # GPUs: the CPU threads are not ours to size


def test_the_real_sampler_sees_a_busy_process():
    """psutil's numbers, end to end: a spinning child is counted as busy elsewhere, we are not."""
    sampler = _runtime._CpuSampler()
    hog = subprocess.Popen([sys.executable, "-c", "import time\nt = time.monotonic() + 30\nwhile time.monotonic() < t: pass"])
    try:
        import time

        time.sleep(1.0)
        sampler.busy_elsewhere()
        time.sleep(1.0)
        busy = sampler.busy_elsewhere()
    finally:
        hog.kill()
        hog.wait()
    assert busy >= 0.5  # at least the hog (others may be running too)


def test_passive_wait_is_set_before_torch_loads():
    code = ("import os, sys\nfrom qupath_camseg._runtime import prefer_passive_omp_wait as p\n"
            "a = p(); v = os.environ.get('OMP_WAIT_POLICY')\nimport torch\nprint(a, v, p())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "PASSIVE", "False"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's choice is kept
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "ACTIVE", "False"]
    cli = ("import os\nfrom qupath_camseg.cli import main\nmain(['--version'])\nprint(os.environ.get('OMP_WAIT_POLICY'))")
    env.pop("OMP_WAIT_POLICY")
    out = subprocess.run([sys.executable, "-c", cli], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == "PASSIVE"  # the command line sets it first thing
