"""Whose a file is, and whether others can change it: the one rule behind the result
files' trust checks (``local_results``) and the run store's privacy warnings
(``sqlite_privacy``), and the private directories both create.

A path is *safely owned* when the current user or root owns it (root can change anything
anyway) and neither group nor others can write it (OpenSSH's StrictModes rule). A helper
for plugins, not a hook module.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Mode bits that let group or others write.
OTHERS_WRITE = 0o022


def user_name(uid: int) -> str:
    """The user name of ``uid`` for messages, or the number when it has none."""
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def foreign(st: os.stat_result) -> bool:
    """Whether the path stat'ed as ``st`` belongs to neither the current user nor root."""
    return st.st_uid not in (os.geteuid(), 0)


def others_can_write(st: os.stat_result) -> bool:
    """Whether group or others may write the path stat'ed as ``st``."""
    return bool(st.st_mode & OTHERS_WRITE)


def safely_owned(st: os.stat_result) -> bool:
    """Whether the path stat'ed as ``st`` is the current user's (or root's) and neither
    group nor others can write it: no one else can have planted or changed it."""
    return not foreign(st) and not others_can_write(st)


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700 whatever the umask (a
    directory that exists already is left as it is)."""
    missing = []
    directory = path
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:  # made by another process meanwhile: theirs to set
            continue
        os.chmod(directory, 0o700)  # the umask may have taken bits from the owner
