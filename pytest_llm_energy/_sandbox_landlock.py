"""Landlock for the sandbox's candidates: each one sees the interpreter's files and its own directory.

Landlock (Linux 5.13+) lets an unprivileged process give up access for
itself and its children, and the kernel enforces it on every path, whatever
the uid. Each candidate gets a domain of its own in which it may read the
standard library and the shared libraries the interpreter loads, read and
write regular files in its own working directory, and nothing else: not
another candidate's directory, not the dataset or the project's virtual
environment, not ``/proc`` of other processes, not a host socket or FIFO.
From ABI 4 it also may not bind or connect TCP sockets, and from ABI 6 it may
not signal (``kill``, ``F_SETOWN``) any process outside its domain nor reach
abstract Unix sockets.

Standard library only: loaded by the sandbox worker, which runs ``-I -S``.
"""

import os
import struct
import sys

# System call numbers: the same on x86_64 and aarch64 (the generic table).
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

# File system rights (the ABI that introduced them in brackets).
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # [2], [3], [5]
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # [4]
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # [6]

READ_ONLY_DIR = READ_FILE | READ_DIR
READ_ONLY_FILE = READ_FILE
READ_WRITE_FILE = READ_FILE | WRITE_FILE
# A candidate's own directory: regular files only (no directories, links,
# FIFOs or sockets), so what it leaves is one flat list to remove.
WORKDIR = READ_FILE | WRITE_FILE | READ_DIR | REMOVE_FILE | MAKE_REG | TRUNCATE


def handled_fs(abi):
    return _FS_BY_ABI[max(v for v in _FS_BY_ABI if v <= abi)]


def interpreter_paths():
    """What the interpreter may read after the fork: (directories, files read-only, files read-write)."""
    dirs = {p for p in sys.path if os.path.isdir(p)}
    multiarch = getattr(sys.implementation, "_multiarch", None)
    library_dirs = ["/lib64", "/usr/lib64"]
    if multiarch:
        library_dirs += ["/lib/" + multiarch, "/usr/lib/" + multiarch]
    else:
        library_dirs += ["/lib", "/usr/lib"]
    dirs.update(d for d in library_dirs if os.path.isdir(d))
    # Shared objects already mapped, wherever they are (the interpreter's own
    # libpython, for one): extension modules may need their neighbours.
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(None, 5)[-1]
                if path.startswith("/") and ".so" in os.path.basename(path) and os.path.isfile(path):
                    dirs.add(os.path.dirname(path))
    except OSError:
        pass
    dirs.update(d for d in ("/usr/share/zoneinfo",) if os.path.isdir(d))
    read_only = [f for f in ("/etc/ld.so.cache", "/etc/localtime", "/dev/urandom", "/dev/random", "/dev/zero")
                 if os.path.exists(f)]
    read_write = [f for f in ("/dev/null",) if os.path.exists(f)]
    return sorted(dirs), read_only, read_write


class Landlock:
    """Rulesets for candidates, built in the spawner; each candidate restricts itself with its own."""

    def __init__(self):
        self.abi = 0
        self.fds = []
        try:
            import ctypes
        except ImportError:
            return
        try:
            self._syscall = ctypes.CDLL(None, use_errno=True).syscall
        except (OSError, AttributeError):
            return
        self._syscall.restype = ctypes.c_long
        self._ctypes = ctypes
        abi = self._syscall(ctypes.c_long(_CREATE_RULESET), None, ctypes.c_long(0),
                            ctypes.c_long(_CREATE_RULESET_VERSION))
        self.abi = abi if abi > 0 else 0
        self._rules = []
        self.fds = []  # the O_PATH descriptors the rules hold: keep them open in the spawner

    def prepare(self, read_only_dirs, read_only_files, read_write_files):
        """Open the shared paths once (``O_PATH``) and build their rules."""
        if not self.abi:
            return
        ctypes = self._ctypes
        fs = handled_fs(self.abi)
        net = NET_BIND_TCP | NET_CONNECT_TCP if self.abi >= 4 else 0
        scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if self.abi >= 6 else 0
        fields = 3 if self.abi >= 6 else 2 if self.abi >= 4 else 1
        self._attr = ctypes.create_string_buffer(struct.pack("<3Q", fs, net, scoped), 24)
        self._attr_size = 8 * fields
        for paths, access in ((read_only_dirs, READ_ONLY_DIR), (read_only_files, READ_ONLY_FILE),
                              (read_write_files, READ_WRITE_FILE)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                self.fds.append(fd)
                self._rules.append(self._rule(access & fs, fd))
        self._workdir_rule = self._rule(WORKDIR & fs, -1)

    def _rule(self, access, fd):
        return self._ctypes.create_string_buffer(struct.pack("<Qi", access, fd), 12)

    def ruleset(self, workdir):
        """A ruleset fd for one candidate (None where Landlock is missing), to pass to :meth:`restrict`."""
        if not self.abi:
            return None
        c_long = self._ctypes.c_long
        ruleset = self._syscall(c_long(_CREATE_RULESET), self._attr, c_long(self._attr_size), c_long(0))
        if ruleset < 0:
            raise OSError(self._ctypes.get_errno(), "landlock_create_ruleset failed")
        try:
            for rule in self._rules:
                if self._syscall(c_long(_ADD_RULE), c_long(ruleset), c_long(_RULE_PATH_BENEATH), rule, c_long(0)):
                    raise OSError(self._ctypes.get_errno(), "landlock_add_rule failed")
            fd = os.open(workdir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                struct.pack_into("<i", self._workdir_rule, 8, fd)
                if self._syscall(c_long(_ADD_RULE), c_long(ruleset), c_long(_RULE_PATH_BENEATH),
                                 self._workdir_rule, c_long(0)):
                    raise OSError(self._ctypes.get_errno(), "landlock_add_rule failed")
            finally:
                os.close(fd)
        except BaseException:
            os.close(ruleset)
            raise
        return ruleset

    def restrict(self, ruleset):
        """Enter the ruleset's domain (after ``PR_SET_NO_NEW_PRIVS``); True on success."""
        c_long = self._ctypes.c_long
        return self._syscall(c_long(_RESTRICT_SELF), c_long(ruleset), c_long(0)) == 0
