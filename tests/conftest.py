"""Shared fixtures: a test-sized tiny recipe whose base model is built once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _one_slice_of_the_cores_per_worker() -> None:
    """Under pytest-xdist (the README's `-n 2`), each worker and every process it starts keeps to its own
    slice of the cores. Unpinned, two workers' torch and vLLM thread pools (one thread per core each) share
    the cores and their OpenMP barriers spin against each other: building the tiny base took 473 s instead of
    16 s. Pinned, torch and vLLM size their pools to the slice (vLLM's binding reads the affinity)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not worker or not count or len(cores) < int(count):
        return
    i, n = int(worker.removeprefix("gw")), int(count)
    try:
        os.sched_setaffinity(0, cores[i * len(cores) // n:(i + 1) * len(cores) // n])
    except OSError as e:  # a container that forbids it: slower (see above), not wrong
        print(f"conftest: worker {worker} not pinned to its cores: {e}", file=sys.stderr)


_one_slice_of_the_cores_per_worker()  # before torch is imported: its thread pool is sized on first import

# The longest tests (minutes each on 2 cores) start first, so that the workers finish together rather than
# one of them starting a four-minute test at the end.
LONGEST_FIRST = ("test_multiprocess.py", "test_round_resume.py", "test_deepspeed.py", "test_round.py",
                 "test_real_model.py", "test_capabilities.py", "test_generate.py", "test_tensor_parallel.py",
                 "test_score_cli.py")


def pytest_configure(config: pytest.Config) -> None:
    """Under `-n 2`, tests go to the workers a few at a time as they free up, in the order below (xdist's
    default hands each worker a quarter of the suite in one block at the start: every long test to the first
    worker), and the tests of one `xdist_group` to one worker: those sharing a fixture that takes minutes
    (`built_once`) would otherwise have the other worker wait for it idle."""
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"
        config.option.loadscopereorder = False  # keep LONGEST_FIRST's order, not the biggest group first


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order otherwise

# Small enough for CI's 2 cores, big enough that every stage has rows (some passes, some failures).
TEST_RECIPE = {
    "name": "test",
    "seed": 0,
    "rounds": 1,
    "base": {"num_documents": 8000, "num_steps": 150, "hidden_size": 64, "num_heads": 2, "intermediate_size": 256,
             "chat_fraction": 1.0,
             "batch_size": 16},
    "prompts": {"sources": [{"kind": "tiny", "num_train": 12, "num_heldout": 6}]},
    "generate": {"num_samples": 4, "max_tokens": 48, "max_model_len": 256, "dtype": "float32"},
    # a machine set up without bubblewrap (POSTTRAIN_WITHOUT_BWRAP=1) names the weaker mode, as a user must
    "score": {"code_timeout_s": 5, **({"sandbox": {"isolation": "unshare-net"}}
                                      if os.environ.get("POSTTRAIN_WITHOUT_BWRAP") == "1" else {})},
    "mix": {"dedup_near": False},
    "sft": {"learning_rate": 1e-3, "num_epochs": 2, "batch_size": 1, "checkpoint_every_steps": 2},
    # batch 1, a checkpoint every step: the weak test base passes few prompts whole (a reply cut at max_tokens is
    # never chosen), and the kill tests need a DPO checkpoint before the last step
    "dpo": {"learning_rate": 1e-4, "num_epochs": 1, "batch_size": 1, "checkpoint_every_steps": 1},
    "eval": {"max_tokens": 48},
}


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The directory `name`, filled by `build(path)` once per test session and shared by the xdist workers: a
    session fixture runs once per worker, and two workers building the same run is minutes of CI (the SmolLM2
    round). The first worker to ask builds under a file lock, the others wait for it. Users only read it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this session's directory, above each worker's own
    path, failed = root / name, root / f"{name}.failed"
    with FileLock(str(root / f"{name}.lock")):
        if failed.exists():  # one failure, reported to every test that needs it, not rebuilt per worker
            pytest.fail(f"{name} failed to build in another worker:\n{failed.read_text()}")
        if not (root / f"{name}.done").exists():
            try:
                build(path)
            except BaseException as e:
                failed.write_text(str(e)[-4000:])
                raise
            (root / f"{name}.done").touch()
    return path


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    from posttrain.recipe.config import BaseBuildConfig
    from posttrain.tiny.base import ensure_base

    return built_once(tmp_path_factory, "tiny-base",
                      lambda path: ensure_base(path, BaseBuildConfig(**TEST_RECIPE["base"]), 0))


@pytest.fixture
def recipe_file(tmp_path, tiny_base) -> Path:
    """The test recipe, writing its run under tmp_path/runs and reusing the session's base."""
    recipe = {**TEST_RECIPE, "base_model": str(tiny_base), "output_dir": str(tmp_path / "runs")}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_cli(*args: str, env: dict | None = None, entry: str = "module") -> subprocess.CompletedProcess:
    """Runs posttrain in a fresh process, as a user would (the module CLI or the round.py script)."""
    cmd = ([sys.executable, "-m", "posttrain.cli", *args] if entry == "module"
           else [sys.executable, str(ROOT / "posttrain" / "round.py"), *args[1:]])
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=900)


@pytest.fixture
def host_dir():
    """A fresh host directory outside /tmp (in bwrap mode, /tmp is the sandbox's own: a write to a
    tmp_path would land there and prove nothing about the host filesystem). Sandbox tests."""
    import shutil
    import tempfile

    base = next((d for d in ("/var/tmp", os.path.expanduser("~")) if os.access(d, os.W_OK)), None)
    if base is None:
        pytest.skip("no writable host directory outside /tmp")
    path = tempfile.mkdtemp(prefix="posttrain-sandbox-test-", dir=base)
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


# The fast-path tests' tiny random Llama, SFT mix and DPO pairs (tests/_fast_paths.py), once per module
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from tests._fast_paths import build_model

    return build_model(tmp_path_factory.mktemp("fast") / "model")


@pytest.fixture(scope="module")
def mix():
    from tests._fast_paths import sft_mix

    return sft_mix()


@pytest.fixture(scope="module")
def pairs():
    from tests._fast_paths import dpo_pairs

    return dpo_pairs()


@pytest.fixture(scope="session")
def full_run(tmp_path_factory, tiny_base) -> Path:
    """One uninterrupted round of the test recipe, run through `round.py` as a script (the accelerate entry
    point); the round tests (test_round*.py) read it and compare resumed runs with it."""
    def build(tmp: Path) -> None:
        tmp.mkdir()
        recipe = tmp / "recipe.yaml"
        recipe.write_text(yaml.safe_dump({**TEST_RECIPE, "base_model": str(tiny_base),
                                          "output_dir": str(tmp / "runs")}))
        proc = run_cli("round", "--recipe", str(recipe), entry="script")
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert "held-out accuracy per capability" in proc.stdout

    return built_once(tmp_path_factory, "full", build) / "runs" / "test"
