"""The sandbox's seccomp filter: an allow-list of the system calls a checked program needs.

Loaded by the sandbox worker (``_sandbox_worker.py``, standard library only) and
by the tests, which run the program through a classic-BPF interpreter. Default
deny: a system call not named here fails with ``EPERM``, whatever the checked
code reaches it through (``ctypes`` included), so new kernel features
(``io_uring``, keyrings, SysV IPC, ``memfd_create``, namespaces, ``pidfd_getfd``)
are refused without having to be known.

A few allowed calls are checked on their arguments: ``fcntl`` only for
descriptor flags (never ``F_SETOWN``/``F_SETSIG``/``O_ASYNC``, which make the
kernel signal another process, nor locks), ``ioctl`` only for the terminal
queries Python itself makes, ``prlimit64`` only on the calling process.
"""

import errno
import os
import sys

# Allowed on every architecture where the call exists: memory, I/O on
# descriptors it holds, files (the file system rules are Landlock's and
# bubblewrap's), time, its own signals, its own identity. Missing on purpose:
# process and thread creation, execve, sockets, mkdir, links, special files,
# chmod/chown, locks, prctl, and everything that reaches another process.
ALLOWED = (
    "read", "write", "readv", "writev", "pread64", "pwrite64", "lseek", "close",
    "dup", "dup2", "dup3", "pipe", "pipe2", "poll", "ppoll", "select", "pselect6",
    "open", "openat", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
    "access", "faccessat", "faccessat2", "getdents", "getdents64", "readlink", "readlinkat",
    "getcwd", "chdir", "fchdir", "unlink", "unlinkat", "rmdir", "rename", "renameat", "renameat2",
    "ftruncate", "truncate", "fsync", "fdatasync", "umask", "sendfile", "copy_file_range",
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync",
    "clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep", "clock_nanosleep", "times",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "rt_sigpending",
    "alarm", "setitimer", "getitimer",
    "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid", "getegid", "getgroups",
    "getresuid", "getresgid", "getpgrp", "getpgid", "getsid", "uname", "sysinfo", "getrusage",
    "getrlimit", "sched_getaffinity", "sched_yield", "getcpu",
    "futex", "getrandom", "exit", "exit_group", "restart_syscall",
)
# Refused with an errno Python programs already expect for them.
REFUSED_AS = {
    "clone": errno.EAGAIN, "clone3": errno.EAGAIN, "fork": errno.EAGAIN, "vfork": errno.EAGAIN,
    "socket": errno.EACCES, "socketpair": errno.EACCES,
}
DEFAULT_ERRNO = errno.EPERM

# fcntl commands that only read or set the flags of a descriptor the caller holds.
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC = 0, 1, 2, 3, 4, 1030
FCNTL_ALLOWED = (F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_DUPFD_CLOEXEC)
O_ASYNC = 0o20000  # the same value on x86_64 and aarch64
# ioctl: isatty (TCGETS), the terminal size, close-on-exec.
IOCTL_ALLOWED = (0x5401, 0x5413, 0x5450, 0x5451)

# machine: (audit arch, {name: number}); numbers from the kernel's unistd headers.
SYSCALLS = {
    "x86_64": (0xC000003E, {
        "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6, "poll": 7,
        "lseek": 8, "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12, "rt_sigaction": 13,
        "rt_sigprocmask": 14, "rt_sigreturn": 15, "ioctl": 16, "pread64": 17, "pwrite64": 18,
        "readv": 19, "writev": 20, "access": 21, "pipe": 22, "select": 23, "sched_yield": 24,
        "mremap": 25, "msync": 26, "madvise": 28, "shmget": 29, "shmat": 30, "shmctl": 31, "dup": 32,
        "dup2": 33, "nanosleep": 35, "getitimer": 36, "alarm": 37, "setitimer": 38, "getpid": 39,
        "sendfile": 40, "socket": 41, "connect": 42, "bind": 49, "socketpair": 53, "clone": 56,
        "fork": 57, "vfork": 58, "execve": 59, "exit": 60, "kill": 62, "uname": 63, "semget": 64,
        "semop": 65, "semctl": 66, "shmdt": 67, "msgget": 68, "msgsnd": 69, "msgrcv": 70,
        "msgctl": 71, "fcntl": 72, "flock": 73, "fsync": 74, "fdatasync": 75, "truncate": 76,
        "ftruncate": 77, "getdents": 78, "getcwd": 79, "chdir": 80, "fchdir": 81, "rename": 82,
        "mkdir": 83, "rmdir": 84, "link": 86, "unlink": 87, "symlink": 88, "readlink": 89,
        "chmod": 90, "fchmod": 91, "chown": 92, "fchown": 93, "lchown": 94, "umask": 95,
        "gettimeofday": 96, "getrlimit": 97, "getrusage": 98, "sysinfo": 99, "times": 100,
        "ptrace": 101, "getuid": 102, "getgid": 104, "geteuid": 107, "getegid": 108,
        "getppid": 110, "getpgrp": 111, "getgroups": 115, "getresuid": 118, "getresgid": 120,
        "getpgid": 121, "getsid": 124, "rt_sigpending": 127, "rt_sigqueueinfo": 129,
        "sigaltstack": 131, "mknod": 133, "personality": 135, "statfs": 137, "fstatfs": 138,
        "prctl": 157, "mount": 165, "umount2": 166, "gettid": 186, "tkill": 200, "time": 201,
        "futex": 202, "sched_getaffinity": 204, "getdents64": 217, "restart_syscall": 219,
        "clock_gettime": 228, "clock_getres": 229, "clock_nanosleep": 230, "exit_group": 231,
        "tgkill": 234, "add_key": 248, "request_key": 249, "keyctl": 250, "openat": 257,
        "mkdirat": 258, "mknodat": 259, "fchownat": 260, "newfstatat": 262, "unlinkat": 263,
        "renameat": 264, "linkat": 265, "symlinkat": 266, "readlinkat": 267, "fchmodat": 268,
        "faccessat": 269, "pselect6": 270, "ppoll": 271, "unshare": 272, "dup3": 292,
        "pipe2": 293, "rt_tgsigqueueinfo": 297, "prlimit64": 302, "setns": 308, "getcpu": 309,
        "process_vm_readv": 310, "process_vm_writev": 311, "renameat2": 316, "getrandom": 318,
        "memfd_create": 319, "execveat": 322, "copy_file_range": 326, "statx": 332,
        "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "pidfd_open": 434, "clone3": 435, "pidfd_getfd": 438,
        "faccessat2": 439, "fchmodat2": 452,
    }),
    "aarch64": (0xC00000B7, {
        "getcwd": 17, "dup": 23, "dup3": 24, "fcntl": 25, "ioctl": 29, "flock": 32, "mknodat": 33,
        "mkdirat": 34, "unlinkat": 35, "symlinkat": 36, "linkat": 37, "renameat": 38, "umount2": 39,
        "mount": 40, "statfs": 43, "fstatfs": 44, "truncate": 45, "ftruncate": 46, "faccessat": 48,
        "chdir": 49, "fchdir": 50, "fchmod": 52, "fchmodat": 53, "fchownat": 54, "fchown": 55,
        "openat": 56, "close": 57, "pipe2": 59, "getdents64": 61, "lseek": 62, "read": 63,
        "write": 64, "readv": 65, "writev": 66, "pread64": 67, "pwrite64": 68, "sendfile": 71,
        "pselect6": 72, "ppoll": 73, "readlinkat": 78, "newfstatat": 79, "fstat": 80, "fsync": 82,
        "fdatasync": 83, "personality": 92, "exit": 93, "exit_group": 94, "unshare": 97,
        "futex": 98, "nanosleep": 101, "getitimer": 102, "setitimer": 103, "clock_gettime": 113,
        "clock_getres": 114, "clock_nanosleep": 115, "ptrace": 117, "sched_getaffinity": 123,
        "sched_yield": 124, "restart_syscall": 128, "kill": 129, "tkill": 130, "tgkill": 131,
        "sigaltstack": 132, "rt_sigaction": 134, "rt_sigprocmask": 135, "rt_sigpending": 136,
        "rt_sigqueueinfo": 138, "rt_sigreturn": 139, "getresuid": 148, "getresgid": 150,
        "times": 153, "getpgid": 155, "getsid": 156, "getgroups": 158, "uname": 160,
        "getrlimit": 163, "getrusage": 165, "umask": 166, "prctl": 167, "getcpu": 168,
        "gettimeofday": 169, "getpid": 172, "getppid": 173, "getuid": 174, "geteuid": 175,
        "getgid": 176, "getegid": 177, "gettid": 178, "sysinfo": 179, "msgget": 186,
        "msgctl": 187, "msgrcv": 188, "msgsnd": 189, "semget": 190, "semctl": 191, "semop": 193,
        "shmget": 194, "shmctl": 195, "shmat": 196, "shmdt": 197, "socket": 198, "socketpair": 199,
        "bind": 200, "connect": 203, "munmap": 215, "mremap": 216, "add_key": 217,
        "request_key": 218, "keyctl": 219, "clone": 220, "execve": 221, "mmap": 222,
        "mprotect": 226, "msync": 227, "madvise": 233, "rt_tgsigqueueinfo": 240, "prlimit64": 261,
        "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271, "renameat2": 276,
        "getrandom": 278, "memfd_create": 279, "execveat": 281, "copy_file_range": 285,
        "statx": 291, "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "pidfd_open": 434, "clone3": 435, "pidfd_getfd": 438,
        "faccessat2": 439, "fchmodat2": 452,
    }),
}

# Classic BPF, as seccomp runs it.
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_JSET_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
# x86_64 also accepts x32 system calls: the same arch, numbers with this bit.
X32_SYSCALL_BIT = 0x40000000
# Offsets in struct seccomp_data: nr, arch, then (after the instruction
# pointer) six 64-bit arguments; the low word of argument i is at 16 + 8 i.
_NR, _ARCH = 0, 4


def _arg_low(index):
    return 16 + 8 * index


def program(arch, numbers):
    """The filter as (code, jt, jf, k) instructions."""
    ins = []

    def op(code, k, jt=0, jf=0):
        ins.append((code, jt, jf, k))

    allow, deny = RET_ALLOW, RET_ERRNO | DEFAULT_ERRNO
    op(BPF_LD_W_ABS, _ARCH)
    op(BPF_JEQ_K, arch, 1, 0)
    op(BPF_RET_K, RET_ERRNO | errno.ENOSYS)  # a foreign ABI (i386 on x86_64): refuse everything
    op(BPF_LD_W_ABS, _NR)
    if "fork" in numbers:  # x86_64: the x32 ABI would bypass the numbers below
        op(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1)
        op(BPF_RET_K, RET_ERRNO | errno.ENOSYS)
    # The calls of every check first, so the common path is short (the
    # kernel also caches the verdict of calls whose arguments are not read).
    for name in ALLOWED:
        if name in numbers:
            op(BPF_JEQ_K, numbers[name], 0, 1)
            op(BPF_RET_K, allow)
    for name, code in REFUSED_AS.items():
        if name in numbers:
            op(BPF_JEQ_K, numbers[name], 0, 1)
            op(BPF_RET_K, RET_ERRNO | code)
    # fcntl: flag commands; F_SETFL without O_ASYNC.
    op(BPF_JEQ_K, numbers["fcntl"], 0, 6 + len(FCNTL_ALLOWED))
    op(BPF_LD_W_ABS, _arg_low(1))
    for position, cmd in enumerate(FCNTL_ALLOWED):
        op(BPF_JEQ_K, cmd, len(FCNTL_ALLOWED) + 2 - position, 0)
    op(BPF_JEQ_K, F_SETFL, 0, 3)
    op(BPF_LD_W_ABS, _arg_low(2))
    op(BPF_JSET_K, O_ASYNC, 1, 0)
    op(BPF_RET_K, allow)
    op(BPF_RET_K, deny)
    # ioctl: the few terminal queries.
    op(BPF_JEQ_K, numbers["ioctl"], 0, 3 + len(IOCTL_ALLOWED))
    op(BPF_LD_W_ABS, _arg_low(1))
    for position, cmd in enumerate(IOCTL_ALLOWED):
        op(BPF_JEQ_K, cmd, len(IOCTL_ALLOWED) - position, 0)
    op(BPF_RET_K, deny)
    op(BPF_RET_K, allow)
    # prlimit64: on itself only (pid 0), never on another process.
    op(BPF_JEQ_K, numbers["prlimit64"], 0, 4)
    op(BPF_LD_W_ABS, _arg_low(0))
    op(BPF_JEQ_K, 0, 0, 1)
    op(BPF_RET_K, allow)
    op(BPF_RET_K, deny)
    op(BPF_RET_K, deny)
    return ins


class Filter:
    """The compiled filter and prctl, prepared once before any fork."""

    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, PR_SET_DUMPABLE = 38, 22, 2, 4

    def __init__(self):
        self.ready = False
        spec = SYSCALLS.get(os.uname().machine)
        if spec is None or sys.byteorder != "little":
            return
        import ctypes

        instructions = program(*spec)

        class SockFilter(ctypes.Structure):
            _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                        ("k", ctypes.c_uint)]

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

        self._filters = (SockFilter * len(instructions))(*[SockFilter(*i) for i in instructions])
        self._prog = SockFprog(len(instructions), self._filters)
        try:
            self._prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            return
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
        self._address = ctypes.addressof(self._prog)
        self.ready = True

    def no_new_privs(self):
        return self.ready and self._prctl(self.PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) == 0

    def install(self):
        """Install the filter in this process; False where unsupported."""
        if not self.no_new_privs():
            return False
        return self._prctl(self.PR_SET_SECCOMP, self.SECCOMP_MODE_FILTER, self._address, 0, 0) == 0

    def set_dumpable(self, value):
        return self.ready and self._prctl(self.PR_SET_DUMPABLE, value, None, 0, 0) == 0
