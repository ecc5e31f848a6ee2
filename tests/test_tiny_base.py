"""ensure_base's cache: a built tiny base is reused for the same config, seed and world version and rebuilt
otherwise. The (minute-long) build itself is replaced by a stub that records its calls."""

from __future__ import annotations

import json

import pytest

from posttrain.recipe.config import BaseBuildConfig
from posttrain.tiny import base, world


@pytest.fixture
def builds(monkeypatch) -> list[tuple]:
    calls = []

    def build(out, cfg, seed):
        calls.append((cfg.hidden_size, seed))
        (out / "model.safetensors").write_text(f"hidden {cfg.hidden_size} seed {seed}")

    monkeypatch.setattr(base, "build_base", build)
    return calls


def weights(path) -> str:
    return (path / "model.safetensors").read_text()


def test_same_config_and_seed_reuse_the_build(tmp_path, builds):
    path = tmp_path / "tiny-base"
    assert base.ensure_base(path, BaseBuildConfig(hidden_size=64), 0) == path
    assert base.ensure_base(path, BaseBuildConfig(hidden_size=64), 0) == path
    assert builds == [(64, 0)] and weights(path) == "hidden 64 seed 0"
    assert json.loads((path / base.BUILD_INFO).read_text())["seed"] == 0
    assert not (tmp_path / "tiny-base.tmp").exists()


@pytest.mark.parametrize("cfg, seed", [(BaseBuildConfig(hidden_size=32), 0), (BaseBuildConfig(hidden_size=64), 1)])
def test_another_config_or_seed_rebuilds_in_place(tmp_path, builds, cfg, seed):
    path = tmp_path / "tiny-base"
    base.ensure_base(path, BaseBuildConfig(hidden_size=64), 0)
    (path / "left-by-the-old-build").write_text("")
    base.ensure_base(path, cfg, seed)
    assert builds == [(64, 0), (cfg.hidden_size, seed)]
    assert weights(path) == f"hidden {cfg.hidden_size} seed {seed}"
    assert not (path / "left-by-the-old-build").exists()  # replaced whole, not built over
    base.ensure_base(path, cfg, seed)
    assert len(builds) == 2  # and the new build is reused in turn


def test_a_folder_it_did_not_build_is_never_replaced(tmp_path, builds):
    path = tmp_path / "someone-elses-model"
    path.mkdir()
    (path / "model.safetensors").write_text("theirs")
    with pytest.raises(FileExistsError, match="did not build"):
        base.ensure_base(path, BaseBuildConfig(), 0)
    assert builds == [] and weights(path) == "theirs"


def test_a_new_world_version_rebuilds(tmp_path, builds, monkeypatch):
    path = tmp_path / "tiny-base"
    base.ensure_base(path, BaseBuildConfig(), 0)
    monkeypatch.setattr(world, "WORLD_VERSION", world.WORLD_VERSION + 1)
    base.ensure_base(path, BaseBuildConfig(), 0)
    assert len(builds) == 2


def test_a_failed_rebuild_keeps_the_old_base(tmp_path, builds, monkeypatch):
    path = tmp_path / "tiny-base"
    base.ensure_base(path, BaseBuildConfig(hidden_size=64), 0)

    def crash(out, cfg, seed):
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(base, "build_base", crash)
    with pytest.raises(RuntimeError):
        base.ensure_base(path, BaseBuildConfig(hidden_size=32), 0)
    assert weights(path) == "hidden 64 seed 0"  # the half-built one stays in tiny-base.tmp
    assert json.loads((path / base.BUILD_INFO).read_text())["config"]["hidden_size"] == 64
