"""Where commands write: nothing of the user's is ever deleted or overwritten silently.

Every command writes its outputs through this module, with one rule (also in the README, "Command line"):

* An output folder (`--out DIR`) is checked before any long work: DIR must be a folder or not exist,
  must not lie inside a file, and its folder must be writable. DIR may hold only files terwin wrote
  there (listed in `DIR/.terwin-outputs.json`, or in that file of a sub-folder); any other file
  refuses the command unless `--force`. Even with `--force` no file is deleted: only the files the
  command writes replace those of the same name. `OutputFolder` stages the work in a fresh hidden
  folder (beside DIR when DIR does not exist, else inside it) and moves it into DIR only when the
  command succeeds; a failed command leaves DIR exactly as it was, and no folder it created.
  A shared folder (`shared=True`: `terwin report DIR` writes its report into a folder of inputs)
  may hold anything; only the files written must not replace a file terwin did not write.
* An output file (`--json OUT`) must not be one of the command's input files, nor a folder; an
  existing OUT is replaced (atomically: a temporary file beside it, then `os.replace`) only if
  terwin wrote it or it holds JSON (the user named it, like a compiler's `-o`); any other file
  (a model, Verilog, data) is refused unless `--force`. When OUT's folder holds a
  `.terwin-outputs.json`, OUT is added to it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from . import safeio
from .errors import TerwinError

MANIFEST = ".terwin-outputs.json"
TMP_MARK = ".terwin-tmp-"      # staging folders and temporary files; never a user's
_JSON_LIMIT = 64 << 20         # a larger existing --json target is not read to see if it is JSON


def _err(option: str, path, why: str) -> TerwinError:
    return TerwinError(f"{option} {path}: {why}")


def _listed(folder: Path) -> set[str]:
    """The relative paths `folder`'s manifest lists (none when it has no readable manifest)."""
    try:  # through safeio: a FIFO or a huge file under the manifest's name is no manifest, not a hang
        files = safeio.load_json(folder / MANIFEST, what="terwin outputs list")["files"]
    except (TerwinError, KeyError, TypeError):
        return set()
    return {f for f in files if isinstance(f, str)} if isinstance(files, list) else set()


def _walk(folder: Path):
    """(relative path, whether terwin wrote it) of every file under `folder`, symlinks included,
    manifests and terwin's temporary files not, in a stable order (a folder's files, then its sub-folders)."""
    owned = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        if MANIFEST in filenames:  # os.walk reaches a folder before the folders below it
            owned |= {(rel / f).as_posix() for f in _listed(Path(dirpath))}
        links = [n for n in dirnames if os.path.islink(os.path.join(dirpath, n))]
        dirnames[:] = sorted(n for n in dirnames if TMP_MARK not in n and n not in links)
        for name in sorted(filenames + links):
            if TMP_MARK not in name and name != MANIFEST:
                path = (rel / name).as_posix()
                yield path, path in owned


def _files(folder: Path) -> list[str]:
    return [path for path, _ in _walk(folder)]


def foreign_files(folder) -> list[str]:
    """Files under `folder` that terwin did not write: listed in no manifest in or above them."""
    return [path for path, owned in _walk(Path(folder)) if not owned]


def is_terwins(path) -> bool:
    """Whether a manifest in the file's folder, or a folder above it, lists the file."""
    path = Path(path).absolute()
    return any(path.relative_to(folder).as_posix() in _listed(folder) for folder in path.parents)


def _writable_base(path: Path, option: str, shown) -> Path:
    """The nearest existing folder at or above `path`, after proving a folder can be created in it."""
    base = path
    while not base.exists() and not base.is_symlink():
        base = base.parent
    if not base.is_dir():
        raise _err(option, shown, f"{base} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=base, prefix=TMP_MARK))
    except OSError as e:
        raise _err(option, shown, f"cannot write in {base} ({e.strerror})") from None
    return base


def check_folder(path, *, force: bool = False, shared: bool = False, option: str = "--out") -> Path:
    """Refuse an output folder the command could not, or must not, write into; create nothing."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise _err(option, path, "exists and is not a folder")
    _writable_base(out, option, path)
    if out.is_dir() and not (force or shared):
        foreign = next((rel for rel, owned in _walk(out) if not owned), None)  # the first is enough
        if foreign is not None:
            raise _err(option, path, f"holds files terwin did not write, such as {foreign}; choose another "
                                     f"folder, or --force to write beside them (they are kept)")
    return out


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return those created, deepest first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def _write_manifest(folder: Path, files) -> None:
    listed = sorted(f for f in set(files) if (folder / f).is_file() or (folder / f).is_symlink())
    _atomic_write(folder / MANIFEST, json.dumps({"written_by": "terwin", "files": listed}, indent=1) + "\n")


def _atomic_write(path: Path, data) -> None:
    """`data`: str, bytes, or the Path of a file to copy."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, Path):
                with open(data, "rb") as src:
                    shutil.copyfileobj(src, f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class OutputFolder:
    """`with OutputFolder(args.out, force=args.force) as stage:` write into `stage`; see the module doc."""

    def __init__(self, path, *, force: bool = False, shared: bool = False, option: str = "--out"):
        self.path, self.force, self.shared, self.option = Path(path), force, shared, option
        self.stage = None
        self.created: list[Path] = []

    def __enter__(self) -> Path:
        check_folder(self.path, force=self.force, shared=self.shared, option=self.option)
        self.existed = self.path.is_dir()
        if self.existed:
            self.stage = Path(tempfile.mkdtemp(dir=self.path, prefix=TMP_MARK))
        else:
            self.created = _make_parents(self.path.parent)
            self.stage = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}{TMP_MARK}"))
        return self.stage

    def __exit__(self, kind, value, tb) -> bool:
        try:
            if kind is None:
                self._commit()
        except BaseException:
            kind = True
            raise
        finally:
            if self.stage.exists():
                shutil.rmtree(self.stage, ignore_errors=True)
            if kind is not None:
                _remove_empty(self.created)
        return False

    def _commit(self) -> None:
        written = _files(self.stage)
        if not self.existed:
            _write_manifest(self.stage, written)
            os.rename(self.stage, self.path)
            return
        # every check before the first file moves: DIR changes completely or not at all
        foreign = set(foreign_files(self.path)) if self.shared and not self.force else set()
        for rel in written:
            dest = self.path / rel
            if dest.is_dir() and not dest.is_symlink():
                raise _err(self.option, self.path, f"{rel} is a folder where terwin writes a file")
            blocking = next((p for p in dest.parents if p != self.path and p.is_relative_to(self.path)
                             and p.exists() and not p.is_dir()), None)
            if blocking is not None:
                raise _err(self.option, self.path, f"{blocking.relative_to(self.path)} is a file where terwin "
                                                   f"writes a folder")
            if rel in foreign:
                raise _err(self.option, self.path, f"terwin would replace {rel}, which it did not write; "
                                                   f"move it, or --force")
        for rel in written:
            (self.path / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.stage / rel, self.path / rel)
        _write_manifest(self.path, _listed(self.path) | set(written))


def _same_file(a: Path, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _holds_json(path: Path) -> bool:
    try:
        if path.stat().st_size > _JSON_LIMIT:
            return False
        json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return True


def check_file(path, *, inputs=(), force: bool = False, option: str = "--json", replace_json: bool = True) -> Path:
    """Refuse an output file the command could not, or must not, write; create nothing.
    `inputs`: the command's input files (paths; None and non-files are skipped)."""
    out = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)  # a link: write its target
    if out.is_dir():
        raise _err(option, path, "is a folder")
    if out.exists() and not out.is_file():
        raise _err(option, path, "is not a regular file (a device, pipe or socket)")
    for given in inputs:
        if given is not None and out.exists() and _same_file(out, given):
            raise _err(option, path, f"is an input of the command ({given}); it would be overwritten")
    _writable_base(out.parent, option, path)
    if out.exists() and not force and not is_terwins(out) and not (replace_json and _holds_json(out)):
        what = "is not JSON, and terwin did not write it" if replace_json else "exists, and terwin did not write it"
        raise _err(option, path, f"{what}: refusing to overwrite it; choose another file, or --force")
    return out


def write_file(path, data, *, inputs=(), force: bool = False, option: str = "--json",
               replace_json: bool = True) -> Path:
    """Write `data` (str, bytes, or a Path to copy) to `path` atomically, after `check_file`; record it
    in the manifest of its folder when that folder has one."""
    out = check_file(path, inputs=inputs, force=force, option=option, replace_json=replace_json)
    created = _make_parents(out.parent)
    try:
        _atomic_write(out, data)
    except BaseException:
        _remove_empty(created)
        raise
    if (out.parent / MANIFEST).is_file():
        _write_manifest(out.parent, _listed(out.parent) | {out.name})
    return out
