"""Removing a directory that untrusted code has written to, safely for a privileged caller.

Every step works on directory descriptors (``openat``/``unlinkat``/``renameat``
relative to a descriptor, ``O_NOFOLLOW``), so a symbolic link swapped in while
the removal runs is removed as a link and never followed: no file outside the
tree is changed, made accessible or emptied. The walk is iterative, and a tree
deeper than a few dozen levels is flattened by moving its deep directories up
to the top, so neither the stack nor the open descriptors grow with its depth.

Standard library only: loaded by the sandbox worker, which runs ``-I -S``, and
by the pytest process for the subprocess mode's private directory.
"""

import errno
import os
import stat

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Directories open at once during a removal; deeper ones are moved up.
MAX_OPEN_DEPTH = 32


def _open_dir(name, dir_fd):
    """Open a subdirectory without following a link, also one locked with mode 000."""
    try:
        return os.open(name, _OPEN_DIR, dir_fd=dir_fd)
    except PermissionError:
        pass
    # Unlock it through a descriptor of the very inode: nothing swapped in
    # afterwards can redirect the chmod.
    handle = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if not stat.S_ISDIR(os.fstat(handle).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", name)
        os.chmod("/proc/self/fd/%d" % handle, 0o700)
    finally:
        os.close(handle)
    return os.open(name, _OPEN_DIR, dir_fd=dir_fd)


def remove_tree(path):
    """Remove ``path`` and everything under it; True when it is gone.

    Never raises for what the tree holds: what cannot be removed is left.
    """
    try:
        top = _open_dir(path, None)
    except FileNotFoundError:
        return True
    except OSError:
        # Not a directory (a link put in its place, say): remove the entry itself.
        try:
            os.unlink(path)
        except OSError:
            pass
        return not os.path.lexists(path)
    moved = 0
    # Each frame: the directory's descriptor, its name in the parent, entries that resisted.
    stack = [(top, None, set())]
    while stack:
        fd, own_name, skip = stack[-1]
        try:
            if os.fstat(fd).st_mode & 0o700 != 0o700:
                os.fchmod(fd, 0o700)  # its writer locked it
        except OSError:
            pass
        child = None
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    name = entry.name
                    if name in skip:
                        continue
                    try:
                        os.unlink(name, dir_fd=fd)  # files, links, FIFOs, sockets: never followed
                        continue
                    except IsADirectoryError:
                        pass
                    except OSError as exc:
                        if exc.errno not in (errno.EISDIR, errno.EPERM):
                            skip.add(name)
                            continue
                    if len(stack) >= MAX_OPEN_DEPTH:
                        # Too deep to keep open: move it to the top and remove it from there.
                        moved += 1
                        try:
                            os.rename(name, ".deep-%d-%d" % (os.getpid(), moved), src_dir_fd=fd, dst_dir_fd=top)
                        except OSError:
                            skip.add(name)
                        continue
                    try:
                        child = (_open_dir(name, fd), name, set())
                    except OSError:
                        skip.add(name)
                        continue
                    break
        except OSError:
            pass
        if child is not None:
            stack.append(child)
            continue
        stack.pop()
        os.close(fd)
        if stack:
            parent_fd, parent_skip = stack[-1][0], stack[-1][2]
            try:
                os.rmdir(own_name, dir_fd=parent_fd)
            except OSError:
                parent_skip.add(own_name)
    try:
        os.rmdir(path)
    except OSError:
        pass
    return not os.path.lexists(path)
