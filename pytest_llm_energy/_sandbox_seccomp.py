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

Installing a long filter costs the kernel time in every process that does it,
so the spawner installs the allow-list once, with the few calls it needs
itself on top (:data:`SPAWNER_EXTRA`: forking, reaping, making a candidate's
directory, confining it), and each candidate adds a short filter that refuses
exactly those. The kernel applies both, so a candidate gets the allow-list
and nothing more.
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
# What the spawner (and a candidate, while it confines itself) needs on top of
# ALLOWED; each candidate's own filter refuses these again.
SPAWNER_EXTRA = (
    "clone", "wait4", "kill", "sendmsg", "recvmsg", "sendto", "recvfrom", "mkdir", "mkdirat",
    "chown", "fchown", "fchownat", "chmod", "fchmod", "fchmodat", "setsid", "setuid", "setgid",
    "setgroups", "setresuid", "setresgid", "prctl", "seccomp", "close_range", "set_robust_list", "rseq",
    "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
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
        "sendto": 44, "recvfrom": 45, "sendmsg": 46, "recvmsg": 47, "wait4": 61, "setuid": 105,
        "setgid": 106, "setsid": 112, "setgroups": 116, "setresuid": 117, "setresgid": 119,
        "capset": 126, "set_robust_list": 273, "seccomp": 317, "rseq": 334, "close_range": 436,
        "landlock_create_ruleset": 444, "landlock_add_rule": 445, "landlock_restrict_self": 446,
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
        "sendto": 206, "recvfrom": 207, "sendmsg": 211, "recvmsg": 212, "wait4": 260, "setuid": 146,
        "setgid": 144, "setsid": 157, "setgroups": 159, "setresuid": 147, "setresgid": 149,
        "capset": 91, "set_robust_list": 99, "seccomp": 277, "rseq": 293, "close_range": 436,
        "landlock_create_ruleset": 444, "landlock_add_rule": 445, "landlock_restrict_self": 446,
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
BPF_LD_W_ABS, BPF_JA = 0x20, 0x05
BPF_JEQ_K, BPF_JGE_K, BPF_JSET_K, BPF_RET_K = 0x15, 0x35, 0x45, 0x06
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
# x86_64 also accepts x32 system calls: the same arch, numbers with this bit.
X32_SYSCALL_BIT = 0x40000000
# Offsets in struct seccomp_data: nr, arch, then (after the instruction
# pointer) six 64-bit arguments; the low word of argument i is at 16 + 8 i.
_NR, _ARCH = 0, 4
# Numbers tested one after another at a leaf of the search tree.
_LEAF = 3


def _arg_low(index):
    return 16 + 8 * index


class _Assembler:
    """Instructions with symbolic jump targets, resolved to offsets at the end."""

    def __init__(self):
        self.items = []  # (code, k, jt label or None, jf label or None) or ("label", name)
        self.labels = 0

    def label(self):
        self.labels += 1
        return "L%d" % self.labels

    def place(self, name):
        self.items.append(("label", name))

    def op(self, code, k=0, jt=None, jf=None):
        self.items.append((code, k, jt, jf))

    def assemble(self):
        where, count = {}, 0
        for item in self.items:
            if item[0] == "label":
                where[item[1]] = count
            else:
                count += 1
        ins, pc = [], 0
        for item in self.items:
            if item[0] == "label":
                continue
            code, k, jt, jf = item
            if code == BPF_JA:
                k = where[k] - pc - 1
                jt_off = jf_off = 0
            else:
                jt_off = where[jt] - pc - 1 if jt is not None else 0
                jf_off = where[jf] - pc - 1 if jf is not None else 0
                assert 0 <= jt_off < 256 and 0 <= jf_off < 256, "a conditional jump out of reach"
            ins.append((code, jt_off, jf_off, k))
            pc += 1
        return ins


def program(arch, numbers, extra=()):
    """The allow-list filter (plus the calls named in ``extra``) as (code, jt, jf, k) instructions.

    A binary search over the system call number, so every call takes about
    ten instructions, and installing the filter (the kernel runs it once per
    call number to cache the constant verdicts) stays cheap.
    """
    asm = _Assembler()
    allow, deny = RET_ALLOW, RET_ERRNO | DEFAULT_ERRNO
    checked = {"fcntl": asm.label(), "ioctl": asm.label(), "prlimit64": asm.label()}
    actions = {numbers[name]: ("ret", RET_ERRNO | code) for name, code in REFUSED_AS.items() if name in numbers}
    actions.update({numbers[name]: ("ret", allow) for name in ALLOWED + tuple(extra) if name in numbers})
    actions.update({numbers[name]: ("check", label) for name, label in checked.items()})

    _native_only(asm, arch, numbers)

    def tree(nrs):
        if len(nrs) <= _LEAF:
            for nr in nrs:
                other = asm.label()
                asm.op(BPF_JEQ_K, nr, None, other)
                kind, value = actions[nr]
                if kind == "ret":
                    asm.op(BPF_RET_K, value)
                else:
                    asm.op(BPF_JA, value)
                asm.place(other)
            asm.op(BPF_RET_K, deny)
            return
        middle = len(nrs) // 2
        upper = asm.label()
        lower = asm.label()
        asm.op(BPF_JGE_K, nrs[middle], None, lower)
        asm.op(BPF_JA, upper)
        asm.place(lower)
        tree(nrs[:middle])
        asm.place(upper)
        tree(nrs[middle:])

    tree(sorted(actions))

    yes, no = asm.label(), asm.label()
    # fcntl: flag commands; F_SETFL without O_ASYNC.
    asm.place(checked["fcntl"])
    asm.op(BPF_LD_W_ABS, _arg_low(1))
    for cmd in FCNTL_ALLOWED:
        asm.op(BPF_JEQ_K, cmd, yes, None)
    asm.op(BPF_JEQ_K, F_SETFL, None, no)
    asm.op(BPF_LD_W_ABS, _arg_low(2))
    asm.op(BPF_JSET_K, O_ASYNC, no, yes)
    # ioctl: the few terminal queries.
    asm.place(checked["ioctl"])
    asm.op(BPF_LD_W_ABS, _arg_low(1))
    for cmd in IOCTL_ALLOWED:
        asm.op(BPF_JEQ_K, cmd, yes, None)
    asm.op(BPF_JA, no)
    # prlimit64: on itself only (pid 0), never on another process.
    asm.place(checked["prlimit64"])
    asm.op(BPF_LD_W_ABS, _arg_low(0))
    asm.op(BPF_JEQ_K, 0, yes, no)
    asm.place(yes)
    asm.op(BPF_RET_K, allow)
    asm.place(no)
    asm.op(BPF_RET_K, deny)
    return asm.assemble()


def _native_only(asm, arch, numbers):
    """Refuse every call of a foreign ABI (i386 on x86_64) and of x32; leave the number loaded."""
    asm.op(BPF_LD_W_ABS, _ARCH)
    native = asm.label()
    asm.op(BPF_JEQ_K, arch, native, None)
    asm.op(BPF_RET_K, RET_ERRNO | errno.ENOSYS)
    asm.place(native)
    asm.op(BPF_LD_W_ABS, _NR)
    if "fork" in numbers:  # x86_64: the x32 ABI would bypass the numbers
        native64 = asm.label()
        asm.op(BPF_JGE_K, X32_SYSCALL_BIT, None, native64)
        asm.op(BPF_RET_K, RET_ERRNO | errno.ENOSYS)
        asm.place(native64)


def candidate_program(arch, numbers):
    """The short filter a candidate adds over the spawner's: SPAWNER_EXTRA refused again."""
    asm = _Assembler()
    _native_only(asm, arch, numbers)
    for name in SPAWNER_EXTRA:
        if name in numbers:
            other = asm.label()
            asm.op(BPF_JEQ_K, numbers[name], None, other)
            asm.op(BPF_RET_K, RET_ERRNO | REFUSED_AS.get(name, DEFAULT_ERRNO))
            asm.place(other)
    asm.op(BPF_RET_K, RET_ALLOW)
    return asm.assemble()


class Filter:
    """The compiled filter and prctl, prepared once before any fork."""

    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, PR_SET_DUMPABLE = 38, 22, 2, 4

    def __init__(self):
        self.ready = False
        self.base_installed = False
        spec = SYSCALLS.get(os.uname().machine)
        if spec is None or sys.byteorder != "little":
            return
        import ctypes

        class SockFilter(ctypes.Structure):
            _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                        ("k", ctypes.c_uint)]

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

        def compiled(instructions):
            filters = (SockFilter * len(instructions))(*[SockFilter(*i) for i in instructions])
            return filters, SockFprog(len(instructions), filters)

        self._programs = {
            "full": compiled(program(*spec)),
            "spawner": compiled(program(*spec, extra=SPAWNER_EXTRA)),
            "candidate": compiled(candidate_program(*spec)),
        }
        try:
            self._prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            return
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
        self._addresses = {name: ctypes.addressof(prog) for name, (_, prog) in self._programs.items()}
        self.ready = True

    def no_new_privs(self):
        return self.ready and self._prctl(self.PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) == 0

    def install(self, which=None):
        """Install a filter in this process; False where unsupported.

        ``which``: ``"spawner"`` (the allow-list and the spawner's own calls,
        once, in the spawner), or by default the candidate's: the short one
        over the spawner's where that is installed, else the whole allow-list.
        """
        if not self.no_new_privs():
            return False
        if which is None:
            which = "candidate" if self.base_installed else "full"
        ok = self._prctl(self.PR_SET_SECCOMP, self.SECCOMP_MODE_FILTER, self._addresses[which], 0, 0) == 0
        if ok and which == "spawner":
            self.base_installed = True
        return ok

    def set_dumpable(self, value):
        return self.ready and self._prctl(self.PR_SET_DUMPABLE, value, None, 0, 0) == 0
