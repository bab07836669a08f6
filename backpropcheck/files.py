"""Which files a run checks: paths and folders walked to ``*.toml`` files and notes' blocks."""

from __future__ import annotations

from pathlib import Path

from .limits import DEFAULT_LIMITS, Limits


def find_files(paths: list[str]) -> list[str]:
    """Files and folders (recursively ``*.toml``, and ``*.md`` notes holding ``toml backpropcheck``
    blocks: one ``NOTE.md:LINE`` per block, see :mod:`.notes`), in a stable order."""
    return walk_files(paths)[0]


def nothing_under(paths: list[str]) -> str:
    """What ``check`` says of the folders (or notes) in which it found nothing to check."""
    return f"no *.toml files (nor *.md notes with ```toml backpropcheck blocks) under {', '.join(paths)}"


def walk_errors(unreadable: list[tuple[str, str]], empty: list[str]) -> list[tuple[str, str]]:
    """The errors of a walk (:func:`walk_paths`) as (path, message), each reported as an invalid file:
    a folder that could not be read, then a folder given under which nothing was found."""
    return ([(f, f"{f}: cannot read this folder ({why}); the files in it were not checked") for f, why in unreadable]
            + [(f, f"{f}: {nothing_under(['this folder'])}") for f in empty])


def walk_files(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """What :func:`find_files` finds, and the folders that could not be read, each with the reason:
    they are reported, never skipped in silence."""
    return walk_paths(paths)[:2]


def walk_paths(paths: list[str], limits: Limits = DEFAULT_LIMITS) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """:func:`walk_files`, and the folders of ``paths`` under which nothing was found nor left unread:
    alone, that is ``check``'s usage error; beside other paths each is an error of its own, never
    skipped in silence.

    An explicit stack, not recursion: a tree 1,100 folders deep is walked like a flat one. Links to
    folders are not followed (a link to an ancestor would never end); links to files are. A note is read
    within ``limits`` (one too large is one error, not one per block)."""
    import os

    from .notes import SUFFIXES, is_note, refs

    out: list[str] = []
    unreadable: list[tuple[str, str]] = []
    empty: list[str] = []
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            if is_note(path) and path.exists():
                out.extend(refs(path, limits=limits))
            else:
                out.append(str(path))
            continue
        before = (len(out), len(unreadable))
        found: list[Path] = []
        stack = [str(p)]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                stack.append(entry.path)
                            elif Path(entry.name).suffix in (".toml", *SUFFIXES) and entry.is_file():
                                found.append(Path(entry.path))
                        except OSError as exc:
                            unreadable.append((entry.path, exc.strerror or str(exc)))
            except OSError as exc:
                unreadable.append((str(Path(folder)), exc.strerror or str(exc)))
        for f in sorted(found):
            out.extend(refs(f, explicit=False, limits=limits) if is_note(f) else [str(f)])
        if (len(out), len(unreadable)) == before:
            empty.append(str(path))
    return _once(out), sorted(unreadable), empty


def _once(names: list[str]) -> list[str]:
    """``names`` without a second mention of one file (``d.toml ./d.toml``, a file and its folder), in order."""
    import os

    seen: set[str] = set()
    out = []
    for name in names:
        key = os.path.realpath(name) if os.path.exists(name) else name  # a note's block NOTE:LINE as it is
        if key not in seen:
            seen.add(key)
            out.append(name)
    return out
