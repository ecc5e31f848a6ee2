"""The run directory: `runs/<name>/round_<r>/<stage>/`, written atomically, resumed by fingerprint.

A stage runs inside `<stage>.tmp/`; its manifest (fingerprint, inputs, row counts, wall time) is the
last file written, then the folder is renamed into place, so a reader never sees a partial output.
The fingerprint hashes the stage's config section and the `output_id` of every input stage: a changed
section, or any upstream stage that reran, invalidates this stage and so everything after it. An input
may also be one table of a stage (`Part`), identified by the sha256 of its bytes (the manifest's
`digests`): a rerun upstream that writes the same table then invalidates nothing downstream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from posttrain.run.dist import barrier, world
from posttrain.run.faults import kill_if, stage_point

log = logging.getLogger("posttrain")
MANIFEST = "manifest.json"
PARTIAL = "partial"  # under a stage's temp folder: finished parts of a resumable stage's work (partial_dir)
PERMISSION_ERRORS = {errno.EACCES, errno.EPERM}
STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, *PERMISSION_ERRORS}


class RunDirError(FileExistsError):
    """The run directory cannot be used (not a directory, not one of ours, not writable, full)."""


@contextlib.contextmanager
def storage(where: Path, doing: str):
    """Turns a full disk or an unwritable folder met while `doing` into a RunDirError naming `where`
    (other OSErrors pass through): every write goes to a temp name first, so earlier outputs are intact.
    A permission error on a file outside the run directory (a model folder, a cache) is not the run
    directory's: it passes through as raised."""
    try:
        yield
    except OSError as e:
        if e.errno not in STORAGE_ERRORS or (e.errno in PERMISSION_ERRORS and not _near(e.filename, where)):
            raise
        raise RunDirError(f"{where}: cannot {doing}: {os.strerror(e.errno)} ({e}); earlier outputs are intact, "
                          f"rerun the same command once it is writable or has space") from e


def _near(filename, where: Path) -> bool:
    """Whether an error's file is `where` or beside it (a stage's temp folder and its final name are
    siblings); True when the error names no file."""
    if not isinstance(filename, (str, os.PathLike)):
        return True
    return Path(os.path.abspath(filename)).is_relative_to(Path(os.path.abspath(where)).parent)


@dataclass(frozen=True)
class StageOutput:
    path: Path
    manifest: dict

    @property
    def output_id(self) -> str:
        return self.manifest["output_id"]

    @property
    def model(self) -> str:
        """The model a stage produced: its `model/` folder, or the path/hub id the base stage resolved."""
        return self.manifest["results"].get("model_path") or str(self.path / "model")

    def part(self, name: str) -> Part:
        """One of this stage's tables, as another stage's input (see Part)."""
        return Part(self, name)


@dataclass(frozen=True)
class Part:
    """One table of a stage's output, as an input identified by its content: a stage that reads only the
    SFT mix is reused when the mix stage reran but wrote the same SFT table (e.g. only select.min_margin
    changed, which moves DPO pairs alone), instead of training again."""

    output: StageOutput
    name: str

    @property
    def path(self) -> Path:
        return self.output.path / self.name

    @property
    def output_id(self) -> str:
        digest = self.output.manifest.get("digests", {}).get(self.name)  # absent in older manifests
        return f"sha256:{digest}" if digest else f"{self.output.output_id}/{self.name}"


def _plain(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else str(obj)


def digests(folder: Path) -> dict[str, str]:
    """{table file name: sha256 of its bytes} for a stage's top-level Parquet tables (pyarrow writes equal
    tables as equal bytes, so equal digests mean equal data)."""
    out = {}
    for path in sorted(folder.glob("*.parquet")):
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        out[path.name] = h.hexdigest()
    return out


def fingerprint(name: str, round_: int, config: Any, inputs: list[StageOutput | Part]) -> str:
    blob = json.dumps({"stage": name, "round": round_, "config": config, "inputs": [i.output_id for i in inputs]},
                      sort_keys=True, default=_plain)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class StageReached(Exception):  # noqa: N818 - a stop, not an error
    """Raised by `RunDir.stage` once the stage named by `stop_after` is complete (a one-stage command)."""

    def __init__(self, output: StageOutput):
        super().__init__(str(output.path))
        self.output = output


class WouldRun(Exception):  # noqa: N818 - the answer of a dry run, not an error
    """Raised by a dry run's `RunDir.stage` at the first stage that would run (the later stages that read
    what it writes run too). `reused`: the (round, stage) pairs before it that a real run reuses."""

    def __init__(self, round_: int, name: str, reason: str, reused: list[tuple[int, str]]):
        super().__init__(f"round {round_} {name}: {reason}")
        self.round, self.name, self.reason, self.reused = round_, name, reason, reused


class RunDir:
    def __init__(self, root: Path, stop_after: tuple[int, str] | None = None, dry_run: bool = False):
        """stop_after: (round, stage): once that stage is complete (run or reused), `stage` raises
        StageReached with its output, so a command can run a round up to one stage and stop there.
        dry_run: write nothing; `stage` returns reusable outputs and raises WouldRun at the first other."""
        self.root, self.stop_after, self.dry_run = Path(root), stop_after, dry_run
        self.reused: list[tuple[int, str]] = []
        if self.root.exists() and not self.root.is_dir():
            raise RunDirError(f"{self.root}: run directory path exists and is not a directory")
        marker = self.root / "run.json"
        if self.root.is_dir() and any(self.root.iterdir()) and not marker.exists():
            raise RunDirError(f"{self.root}: exists, is not empty and is not a posttrain run directory "
                                  f"(no run.json); choose another name or output_dir")
        if dry_run:
            return
        with storage(self.root, "create the run directory"):
            self.root.mkdir(parents=True, exist_ok=True)
            if not marker.exists():
                _write_json(marker, {"format": 1, "created": time.time()})

    def stage_dir(self, round_: int, name: str) -> Path:
        return self.root / f"round_{round_}" / name

    def partial_dir(self, round_: int, name: str) -> Path:
        """Where a resumable stage keeps finished parts of its work while it runs (every rank's, side by side):
        in its temp folder, so kept for a rerun of the same fingerprint, and deleted once the stage is complete."""
        return self.stage_dir(round_, name).with_name(name + ".tmp") / PARTIAL

    def completed(self, round_: int, name: str) -> StageOutput | None:
        path = self.stage_dir(round_, name)
        try:
            return StageOutput(path, json.loads((path / MANIFEST).read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def stage(self, round_: int, name: str, config: Any, inputs: list[StageOutput | Part],
              fn: Callable[[Path], dict | None], *, resumable: bool = False, mode: str = "main",
              merge: Callable[[Path, list[Path], list[dict]], dict] | None = None) -> StageOutput:
        """Runs `fn(tmp_dir) -> {name: value}` unless a complete output with the same fingerprint exists.

        resumable: keep a matching partial `.tmp` (e.g. trainer checkpoints) for `fn` to resume from.
        mode (several processes; with one, all three run `fn` once):
          "main"    fn runs on the main process only (the others wait);
          "all"     fn runs on every process (training under DDP: the trainer saves on the main one);
          "shards"  fn runs on every process into its own `shards/rank<k>/` folder (over its shard of the
                    prompts), then `merge(tmp, shard_dirs, shard_results)` on the main process writes the
                    stage's tables and returns its results.
        Only the main process writes the manifest and renames the stage into place.
        """
        output = self._stage(round_, name, config, inputs, fn, resumable=resumable, mode=mode, merge=merge)
        if self.stop_after == (round_, name):
            raise StageReached(output)
        return output

    def _stage(self, round_: int, name: str, config: Any, inputs: list[StageOutput | Part],
               fn: Callable[[Path], dict | None], *, resumable: bool = False, mode: str = "main",
               merge: Callable[[Path, list[Path], list[dict]], dict] | None = None) -> StageOutput:
        fp = fingerprint(name, round_, config, inputs)
        final = self.stage_dir(round_, name)
        done = self.completed(round_, name)
        tmp = final.with_name(name + ".tmp")
        if done and done.manifest.get("fingerprint") == fp:
            log.info("[round %d] %-8s complete, reused (%s)", round_, name, _rows(done.manifest))
            self.reused.append((round_, name))
            return done
        if self.dry_run:
            partial = resumable and _read(tmp / ".fingerprint") == fp
            raise WouldRun(round_, name, why(done, config, inputs, partial), self.reused)
        w = world()
        if w.is_main:
            if done:
                log.info("[round %d] %-8s recipe or inputs changed: rerunning", round_, name)
            with storage(tmp, f"start stage {name} of round {round_}"):
                if tmp.exists() and not (resumable and _read(tmp / ".fingerprint") == fp):
                    shutil.rmtree(tmp)
                shutil.rmtree(tmp / "shards", ignore_errors=True)  # shards are redone whole
                tmp.mkdir(parents=True, exist_ok=True)
                (tmp / ".fingerprint").write_text(fp)
            log.info("[round %d] %-8s running", round_, name)
            kill_if(stage_point(tmp, "before"))
        barrier()
        start = time.time()
        with storage(tmp, f"write stage {name} of round {round_}"):
            try:
                results = self._run(tmp, fn, mode, merge, w)
            except Exception:  # a failed stage leaves no half-written folder (a resumable one keeps its checkpoints)
                if w.is_main and not resumable:
                    shutil.rmtree(tmp, ignore_errors=True)
                raise
            if w.is_main:
                shutil.rmtree(tmp / PARTIAL, ignore_errors=True)  # complete: no rerun will need its parts
                kill_if(stage_point(tmp, "written"))  # outputs in the temp folder, no manifest yet
                manifest = {
                    "stage": name, "round": round_, "fingerprint": fp, "output_id": uuid.uuid4().hex,
                    "inputs": _input_ids(inputs), "digests": digests(tmp), "results": results,
                    "wall_s": round(time.time() - start, 2), "finished_at": time.time(),
                    "config": _as_json(config), "num_processes": w.size,
                }
                _write_json(tmp / MANIFEST, manifest)  # written last: its presence means the stage is complete
        if w.is_main:
            with storage(final, f"put stage {name} of round {round_} in place"):
                old = final.with_name(name + ".old")  # the previous output goes only once the new one is in
                if final.exists():
                    shutil.rmtree(old, ignore_errors=True)
                    os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            log.info("[round %d] %-8s done in %.1f s (%s)", round_, name, manifest["wall_s"], _rows(manifest))
            kill_if(stage_point(tmp, "after"))
        barrier()
        return self.completed(round_, name)

    @staticmethod
    def _run(tmp: Path, fn, mode: str, merge, w) -> dict:
        """Runs the stage function as `mode` says; returns the manifest results (main process)."""
        if mode == "main":
            return (fn(tmp) or {}) if w.is_main else {}
        if mode == "all":
            return fn(tmp) or {}
        if mode != "shards" or merge is None:
            raise ValueError(f"unknown stage mode {mode!r} (shards needs a merge function)")
        mine = tmp / "shards" / f"rank{w.rank}"
        mine.mkdir(parents=True, exist_ok=True)
        _write_json(mine / "results.json", fn(mine) or {})
        barrier()
        if not w.is_main:
            return {}
        dirs = [tmp / "shards" / f"rank{k}" for k in range(w.size)]
        results = merge(tmp, dirs, [json.loads((d / "results.json").read_text()) for d in dirs])
        shutil.rmtree(tmp / "shards")
        return results


def why(done: StageOutput | None, config: Any, inputs: list[StageOutput | Part], partial: bool = False) -> str:
    """Why a stage runs: no output yet, a partial one to resume, its config's changed keys, or new inputs."""
    if partial:
        return "resumes from its partial output (checkpoints or finished chunks of the same fingerprint)"
    if done is None:
        return "not run yet"
    old, new = done.manifest.get("config"), _as_json(config)
    changed = [f"{key}: {a!r} -> {b!r}" for key, a, b in _changed(old, new)]
    if changed:
        return "recipe changed: " + "; ".join(changed[:5]) + (f"; {len(changed) - 5} more" if len(changed) > 5 else "")
    was, now = done.manifest.get("inputs", {}), _input_ids(inputs)
    moved = sorted(p for p in was.keys() | now.keys() if was.get(p) != now.get(p))
    if moved:
        return "new inputs from " + ", ".join(in_run(p) for p in moved)
    return "its fingerprint changed (an older posttrain version wrote it)"


def _as_json(config: Any) -> Any:
    """A stage's config as its manifest records it (dataclasses as dicts, paths as strings)."""
    return json.loads(json.dumps(config, default=_plain))


def _input_ids(inputs: list[StageOutput | Part]) -> dict[str, str]:
    """{input path: output id}, as the manifest records a stage's inputs."""
    return {str(i.path): i.output_id for i in inputs}


def in_run(path: str) -> str:
    """A stage (or stage table) path from its round folder on: round_1/mix/sft.parquet."""
    parts = Path(path).parts
    at = max((i for i, p in enumerate(parts) if p.startswith("round_")), default=max(0, len(parts) - 2))
    return "/".join(parts[at:])


def _changed(old: Any, new: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every leaf that differs between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for k in sorted(old.keys() | new.keys(), key=str)
                for c in _changed(old.get(k), new.get(k), f"{key}.{k}" if key else str(k))]
    return [] if old == new else [(key or "config", old, new)]


def _rows(manifest: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in manifest.get("results", {}).items()) or "no results"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _write_json(path: Path, obj: Any) -> None:
    """Writes JSON atomically (temp file + rename) so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_plain))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written .part behind
        raise


write_json = _write_json
