"""Behavioural similarity data for RSA, and the stimulus lists that name the images shown to networks.

A *stimulus list* is a text file with one image path per line (UTF-8 or any bytes; blank lines and lines starting
with # are skipped), relative to the list's folder or absolute. Each line is also the stimulus' name.

A *behaviour directory* holds one representational dissimilarity matrix (RDM) per participant:

    stimuli.txt          the stimulus names in RDM order, one per line (the rows and columns of every RDM)
    <participant>.npy    an N x N float array (N = lines of stimuli.txt), in stimuli.txt order
    <participant>.csv    N x N numbers in stimuli.txt order, or labelled: a header row and a first column of
                         stimulus names (any order; rows and columns are reordered to stimuli.txt)

The participant's id is the file name without its extension. Each RDM must be square N x N, finite, symmetric
and zero on the diagonal; a labelled CSV must name exactly the stimuli of stimuli.txt. A behavioural stimulus
name matches the stimulus-list line that equals it, names the same file (a name read as a path relative to the
behaviour directory), or whose file name equals it. NPY files are read without
unpickling (numeric arrays only).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.io import atomic_path

STIMULI_FILE = "stimuli.txt"
RDM_SUFFIXES = (".npy", ".csv")
MIN_STIMULI = 3
MIN_PARTICIPANTS = 2
FORMAT_HINT = "see README, 'Behavioural data'"


def read_lines(path: str | os.PathLike) -> list[str]:
    """The non-blank, non-comment lines of a text file in any encoding (undecodable bytes kept as in file names)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise UserError(f"cannot read {os.fsdecode(path)!r} ({error.strerror}); check the path") from None
    text = raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    return [
        line
        for line in (line.rstrip("\r") for line in text.split("\n"))
        if line.strip() and not line.lstrip().startswith("#")
    ]


@dataclass(frozen=True)
class StimulusList:
    """Image files named by a stimulus list: each line as written (its name) and the file it points to."""

    names: tuple[str, ...]
    paths: tuple[Path, ...]

    def locate(self, wanted: Sequence[str], directory: Path | None = None) -> list[int]:
        """Positions in this list of the stimuli `wanted`: the line equal to a name, else the line naming the same
        file as the name read as a path relative to `directory` (the behaviour directory), else the one line whose
        file name equals it; UserError naming the first stimulus that is missing or ambiguous."""
        exact = {name: index for index, name in enumerate(self.names)}
        same_file = {path.resolve(): index for index, path in enumerate(self.paths)}
        by_file: dict[str, list[int]] = {}
        for index, path in enumerate(self.paths):
            by_file.setdefault(path.name, []).append(index)
        positions, missing = [], []
        for name in wanted:
            resolved = (directory / name).resolve() if directory is not None else None
            if name in exact:
                positions.append(exact[name])
            elif resolved in same_file:
                positions.append(same_file[resolved])
            elif len(by_file.get(name, [])) == 1:
                positions.append(by_file[name][0])
            elif name in by_file:
                raise UserError(
                    f"stimulus {name!r} matches {len(by_file[name])} files in the stimulus list; "
                    "name it by its line in the list instead of its file name"
                )
            else:
                missing.append(name)
        if missing:
            raise UserError(
                f"{len(missing)} behavioural stimuli are missing from the stimulus list (first: {missing[0]!r}); "
                "add their images to the list or remove them from the behavioural data"
            )
        return positions


def write_stimulus_list(path: str | os.PathLike, images: Sequence[str | os.PathLike]) -> Path:
    """Write a stimulus list naming `images` (absolute paths, any encoding), atomically; returns its path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(os.fsencode(Path(image).absolute()) + b"\n" for image in images))
    return path


def read_stimulus_list(path: str | os.PathLike) -> StimulusList:
    """Read a stimulus list; UserError when it is empty, repeats a line, or names a file that does not exist."""
    path = Path(path)
    names = read_lines(path)
    if not names:
        raise UserError(f"stimulus list {os.fsdecode(path)!r} names no images; write one image path per line")
    repeated = _first_repeat(names)
    if repeated is not None:
        raise UserError(f"stimulus list {os.fsdecode(path)!r} lists {repeated!r} twice; list each image once")
    paths = tuple(path.parent.absolute() / name for name in names)
    absent = [name for name, file in zip(names, paths) if not file.is_file()]
    if absent:
        raise UserError(
            f"{len(absent)} images of stimulus list {os.fsdecode(path)!r} do not exist (first: {absent[0]!r}); "
            "paths are relative to the list's folder"
        )
    return StimulusList(tuple(names), paths)


@dataclass(frozen=True)
class Behaviour:
    """Checked behavioural RDMs: stimulus names in RDM order, participant ids, RDMs (participants x N x N)."""

    directory: Path
    stimuli: tuple[str, ...]
    participants: tuple[str, ...]
    rdms: np.ndarray

    def files(self) -> list[Path]:
        """The files the data was read from (stimuli.txt first), for hashes in manifests."""
        return [self.directory / STIMULI_FILE] + [_rdm_file(self.directory, p) for p in self.participants]


def read_behaviour(directory: str | os.PathLike) -> Behaviour:
    """Read and check a behaviour directory (see the module docstring); every problem is a one-line UserError."""
    directory = Path(directory)
    if not (directory / STIMULI_FILE).is_file():
        raise UserError(
            f"behaviour directory {os.fsdecode(directory)!r} has no {STIMULI_FILE}; "
            f"write the stimulus names in RDM order there ({FORMAT_HINT})"
        )
    stimuli = read_lines(directory / STIMULI_FILE)
    repeated = _first_repeat(stimuli)
    if repeated is not None:
        raise UserError(
            f"{STIMULI_FILE} in {os.fsdecode(directory)!r} lists {repeated!r} twice; list each stimulus once"
        )
    if len(stimuli) < MIN_STIMULI:
        raise UserError(f"{STIMULI_FILE} lists {len(stimuli)} stimuli; RSA needs at least {MIN_STIMULI}")
    files = _participant_files(directory)
    rdms = [checked_rdm(file, stimuli) for file in files]
    return Behaviour(directory, tuple(stimuli), tuple(file.stem for file in files), np.stack(rdms))


def write_behaviour(directory: str | os.PathLike, stimuli: Sequence[str], rdms: Mapping[str, np.ndarray]) -> None:
    """Write stimuli.txt and one <participant>.npy per RDM, each atomically."""
    directory = Path(directory)
    with atomic_path(directory / STIMULI_FILE) as tmp:
        tmp.write_bytes("".join(f"{name}\n" for name in stimuli).encode("utf-8", errors="surrogateescape"))
    for participant, rdm in rdms.items():
        with atomic_path(directory / f"{participant}.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.asarray(rdm, dtype=np.float64))


def _first_repeat(names: Sequence[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def _rdm_file(directory: Path, participant: str) -> Path:
    return next(
        directory / f"{participant}{suffix}"
        for suffix in RDM_SUFFIXES
        if (directory / f"{participant}{suffix}").is_file()
    )


def _participant_files(directory: Path) -> list[Path]:
    """The participants' RDM files, sorted by id; UserError when too few or an id has two files."""
    files = sorted(
        (file for file in directory.iterdir() if file.suffix.lower() in RDM_SUFFIXES and file.is_file()),
        key=lambda file: file.stem,
    )
    stems = [file.stem for file in files]
    repeated = _first_repeat(stems)
    if repeated is not None:
        raise UserError(f"participant {repeated!r} has two RDM files in {os.fsdecode(directory)!r}; keep one")
    if len(files) < MIN_PARTICIPANTS:
        raise UserError(
            f"{os.fsdecode(directory)!r} holds {len(files)} participant RDM(s) (.npy or .csv); RSA and its "
            f"noise ceiling need at least {MIN_PARTICIPANTS}"
        )
    return files


def checked_rdm(file: Path, stimuli: Sequence[str]) -> np.ndarray:
    """The RDM in an NPY or CSV file, in the order of `stimuli`, checked as the module docstring says."""
    who = f"RDM file {os.fsdecode(file)!r}"
    rdm = _load_npy(file, who) if file.suffix.lower() == ".npy" else _load_csv(file, stimuli, who)
    n = len(stimuli)
    if rdm.ndim != 2 or rdm.shape != (n, n):
        raise UserError(f"{who}: RDM of shape {rdm.shape}, but {STIMULI_FILE} lists {n} stimuli; it must be {n} x {n}")
    bad = np.argwhere(~np.isfinite(rdm))
    if len(bad):
        i, j = bad[0]
        raise UserError(
            f"{who}: {len(bad)} NaN or infinite entries (first at {stimuli[i]!r}, {stimuli[j]!r}); "
            "fill in every pair or leave the stimulus out"
        )
    tolerance = 1e-8 * max(1.0, float(np.abs(rdm).max()))
    asymmetric = np.argwhere(np.abs(rdm - rdm.T) > tolerance)
    if len(asymmetric):
        i, j = asymmetric[0]
        raise UserError(
            f"{who}: RDM is not symmetric ({stimuli[i]!r}, {stimuli[j]!r} is {rdm[i, j]:g} one way and "
            f"{rdm[j, i]:g} the other); give a symmetric dissimilarity matrix"
        )
    diagonal = np.flatnonzero(np.abs(np.diag(rdm)) > tolerance)
    if len(diagonal):
        i = diagonal[0]
        raise UserError(
            f"{who}: non-zero diagonal ({stimuli[i]!r} has dissimilarity {rdm[i, i]:g} to itself); "
            "a stimulus' dissimilarity to itself must be 0"
        )
    return rdm


def _load_npy(file: Path, who: str) -> np.ndarray:
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise UserError(f"{who}: not a numeric NPY array ({error}); save it with numpy.save") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise UserError(f"{who}: NPY array of {array.dtype}, not numbers; save a float array")
    return array.astype(np.float64)


def _load_csv(file: Path, stimuli: Sequence[str], who: str) -> np.ndarray:
    text = file.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    labelled = bool(rows) and not _is_number(rows[0][-1])
    if labelled:
        return _reordered(rows, stimuli, who)
    return _numbers(rows, who)


def _reordered(rows: list[list[str]], stimuli: Sequence[str], who: str) -> np.ndarray:
    """A labelled CSV (header row and first column of names) in `stimuli` order."""
    columns, names = rows[0][1:], [row[0] for row in rows[1:]]
    values = _numbers([row[1:] for row in rows[1:]], who)
    if columns != names:
        raise UserError(
            f"{who}: the header row and the first column name different stimuli or orders; label rows and columns alike"
        )
    if set(names) != set(stimuli) or len(names) != len(stimuli):
        missing = [name for name in stimuli if name not in names]
        extra = [name for name in names if name not in stimuli]
        detail = f"missing {missing[0]!r}" if missing else f"extra {extra[0]!r}" if extra else "a repeated name"
        raise UserError(
            f"{who}: rates another stimulus set than {STIMULI_FILE} ({detail}); every participant must "
            "rate the same stimuli"
        )
    order = [names.index(name) for name in stimuli]
    return values[np.ix_(order, order)]


def _numbers(rows: list[list[str]], who: str) -> np.ndarray:
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise UserError(f"{who}: CSV rows have different lengths ({sorted(widths)}); write a square matrix")
    try:
        return np.array([[float(cell) for cell in row] for row in rows], dtype=np.float64).reshape(len(rows), -1)
    except ValueError as error:
        raise UserError(
            f"{who}: CSV holds a value that is not a number ({error}); write numbers only "
            "(or a labelled header row and first column)"
        ) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
