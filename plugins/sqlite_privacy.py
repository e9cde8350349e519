"""The run store's files are private: created readable by their owner only, whatever
the umask, and an existing home or store file others could read, write or own is
warned about once, with the command that fixes it. Nothing here changes a mode or an
owner of an existing file: that is the user's call. Whose a file is and who may write it
is ``private_files``'s rule, shared with the result files' trust checks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from headwater.errors import StoreError

from .private_files import foreign, others_can_write, user_name


def create_private(path: Path) -> None:
    """An empty store file only its owner can read and write, whatever the umask (SQLite
    gives the -wal and -shm files it makes the same permissions)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:  # another process made it first: theirs is as private
        pass
    except OSError as exc:
        raise StoreError(f"cannot create the run store {path}: {exc.strerror or exc}") from None


_warned: set[Path] = set()


def warn_if_shared(path: Path) -> None:
    """Warn once per path when HEADWATER_HOME (a directory) or the store file belongs to
    another user, or group or others may write it (they could plant or change run
    history) or read it (every run's parameters and logs are in it). Modes and owners are
    never changed here: the fix is named for the user to apply."""
    if os.name != "posix" or path in _warned:
        return
    try:
        st = path.stat()
    except OSError:
        return
    mode = st.st_mode & 0o777
    is_home = os.path.isdir(path)
    private, readable = (0o700, 0o077) if is_home else (0o600, 0o066)
    me = os.geteuid()
    problems, fixes = [], []
    not_mine = foreign(st)  # root's counts as mine: root can change anything anyway
    if not is_home and not not_mine:
        try:
            closed = not path.parent.stat().st_mode & 0o011
        except OSError:
            closed = False
        if closed:
            return  # no one else can reach the file through its directory (a 0700 home)
    if not_mine:
        problems.append(f"belongs to {user_name(st.st_uid)} (uid {st.st_uid}), not to you ({user_name(me)})")
        fixes.append(f"chown {user_name(me)} {path}")
    if others_can_write(st):
        problems.append(f"can be written by other users (mode {oct(mode)[2:]})")
    elif mode & readable:
        problems.append(f"can be read by other users (mode {oct(mode)[2:]})")
    if not problems:
        return
    if mode & readable:
        fixes.append(f"chmod {oct(private)[2:]} {path}")
    _warned.add(path)
    what = "HEADWATER_HOME" if is_home else "the run store"
    if not_mine or others_can_write(st):
        why = "others can plant or change the run history" + (" in it" if is_home else " it holds")
    else:
        why = ("the run history in it holds" if is_home else "it holds") + " every run's parameters and logs"
    logging.getLogger("headwater.store").warning("%s (%s) %s; %s: %s", path, what, " and ".join(problems),
                                                 why, " && ".join(fixes))
