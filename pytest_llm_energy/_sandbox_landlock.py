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
# The candidates' parent directory in the shared layer; each candidate's own
# layer then keeps every write to its own directory. Regular files only (no
# directories, links, FIFOs or sockets), so what it leaves is one flat list.
CHECKS_DIR = READ_FILE | WRITE_FILE | READ_DIR | REMOVE_FILE | MAKE_REG | TRUNCATE
WRITES = (WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_CHAR | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO
          | MAKE_BLOCK | MAKE_SYM | REFER | TRUNCATE)
WORKDIR = WRITE_FILE | REMOVE_FILE | MAKE_REG | TRUNCATE
# Never readable, even inside the standard library's directory: where pip
# puts packages (the dataset among them).
_PACKAGE_DIRS = ("site-packages", "dist-packages")


def handled_fs(abi):
    return _FS_BY_ABI[max(v for v in _FS_BY_ABI if v <= abi)]


# What a fresh interpreter's site-packages holds: nothing of a user's.
_PACKAGING_TOOLS = ("pip", "setuptools", "wheel", "pkg_resources", "_distutils_hack", "distutils-precedence.pth",
                    "readme.txt", "__pycache__")


def _holds_packages(directory):
    """True when a package directory holds something beyond the packaging tools."""
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    for name in names:
        stem = name.lower().split("-")[0]
        if name.lower() not in _PACKAGING_TOOLS and stem not in _PACKAGING_TOOLS:
            return True
    return False


def _subdirectories_but_packages(directory):
    """A directory's subdirectories without its package directories.

    Its own files (the top-level modules) need no rule: the interpreter
    imports them from ``__pycache__``, reading only the source's metadata.
    """
    return [os.path.join(directory, name) for name in sorted(os.listdir(directory))
            if name not in _PACKAGE_DIRS and os.path.isdir(os.path.join(directory, name))]


def _inside(path, directories):
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in directories)


def interpreter_paths():
    """What the interpreter may read after the fork: (directories, files) read-only, and read-write files.

    The standard library, the system's shared-library directories, and the
    shared objects the interpreter has mapped (``libpython``) as files. Each
    rule costs every candidate time (the kernel copies the rules into its
    domain), so there are few: directories, not their entries, except for a
    standard library whose ``site-packages`` holds packages (an interpreter
    used without a virtual environment): that one gets a rule per
    subdirectory, leaving the packages out (bubblewrap mode hides them
    instead, with an empty file system mounted over them).
    """
    dirs, files = set(), set()
    for entry in sys.path:
        if not os.path.isdir(entry) or os.path.basename(entry) in _PACKAGE_DIRS:
            continue
        if any(_holds_packages(os.path.join(entry, name)) for name in _PACKAGE_DIRS):
            dirs.update(_subdirectories_but_packages(entry))
        else:
            dirs.add(entry)
    multiarch = getattr(sys.implementation, "_multiarch", None)
    library_dirs = ["/lib64", "/usr/lib64"]
    if multiarch:
        library_dirs += ["/lib/" + multiarch, "/usr/lib/" + multiarch]
    else:
        library_dirs += ["/lib", "/usr/lib"]
    dirs.update(d for d in library_dirs if os.path.isdir(d))
    dirs.update(d for d in ("/usr/share/zoneinfo",) if os.path.isdir(d))
    real_dirs = {os.path.realpath(d) for d in dirs}
    # Keep only outermost directories: a rule covers everything beneath it.
    dirs = {d for d in real_dirs if not any(d != other and _inside(d, [other]) for other in real_dirs)}
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(None, 5)[-1]
                if path.startswith("/") and ".so" in os.path.basename(path) and os.path.isfile(path):
                    files.add(path)
    except OSError:
        pass
    files.update(f for f in ("/etc/ld.so.cache", "/etc/localtime", "/dev/urandom", "/dev/random", "/dev/zero")
                 if os.path.exists(f))
    files = {os.path.realpath(f) for f in files}
    files = {f for f in files if not _inside(f, dirs)}
    read_write = [f for f in ("/dev/null",) if os.path.exists(f)]
    return sorted(dirs), sorted(files), read_write


class Landlock:
    """Two layers per candidate: one shared, built once, and one of its own.

    The shared ruleset (built in the server, before any fork) gives read
    access to the interpreter's files and the candidates' parent directory.
    Each candidate enters it, then a second domain of its own that handles
    only writes and allows them in its own directory: one rule, so confining
    a candidate costs a handful of system calls.
    """

    def __init__(self):
        self.abi = 0
        self.shared = None  # the shared ruleset's descriptor: keep it open in the spawner
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

    def _create(self, fs, scoped):
        net = NET_BIND_TCP | NET_CONNECT_TCP if self.abi >= 4 else 0
        fields = 3 if self.abi >= 6 else 2 if self.abi >= 4 else 1
        attr = self._ctypes.create_string_buffer(struct.pack("<3Q", fs, net, scoped if self.abi >= 6 else 0), 24)
        c_long = self._ctypes.c_long
        ruleset = self._syscall(c_long(_CREATE_RULESET), attr, c_long(8 * fields), c_long(0))
        if ruleset < 0:
            raise OSError(self._ctypes.get_errno(), "landlock_create_ruleset failed")
        return ruleset

    def _add(self, ruleset, access, fd):
        rule = self._ctypes.create_string_buffer(struct.pack("<Qi", access, fd), 12)
        c_long = self._ctypes.c_long
        if self._syscall(c_long(_ADD_RULE), c_long(ruleset), c_long(_RULE_PATH_BENEATH), rule, c_long(0)):
            raise OSError(self._ctypes.get_errno(), "landlock_add_rule failed")

    def prepare(self, read_only_dirs, read_only_files, read_write_files, checks_dir):
        """Build the shared layer, once, before any fork."""
        if not self.abi:
            return
        fs = handled_fs(self.abi)
        self.shared = self._create(fs, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
        seen = set()
        for paths, access in ((read_only_dirs, READ_ONLY_DIR), (read_only_files, READ_ONLY_FILE),
                              (read_write_files, READ_WRITE_FILE), ([checks_dir], CHECKS_DIR)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    key = os.fstat(fd)
                    if (key.st_dev, key.st_ino) not in seen:
                        seen.add((key.st_dev, key.st_ino))
                        # Rules on files may only hold file rights.
                        self._add(self.shared, access & fs if os.path.isdir(path) else access & fs & READ_WRITE_FILE,
                                  fd)
                finally:
                    os.close(fd)
        self._own_fs = WRITES & fs

    def restrict(self, workdir):
        """Enter the shared layer, then a layer of this process's own; False on failure.

        Needs ``PR_SET_NO_NEW_PRIVS`` first (or CAP_SYS_ADMIN, which a candidate never has).
        """
        c_long = self._ctypes.c_long
        if self._syscall(c_long(_RESTRICT_SELF), c_long(self.shared), c_long(0)):
            return False
        try:
            own = self._create(self._own_fs, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
        except OSError:
            return False
        try:
            fd = os.open(workdir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                self._add(own, WORKDIR & self._own_fs, fd)
            finally:
                os.close(fd)
            return self._syscall(c_long(_RESTRICT_SELF), c_long(own), c_long(0)) == 0
        except OSError:
            return False
        finally:
            os.close(own)
