"""Run test scripts as forks of one Python process that has already imported torch and fabric_core.

A fresh interpreter pays ``import torch`` and ``import fabric_core`` (about 2 s on a quiet 2-core machine, 10 s
and more under load) before a script's first line, and the multi-process tests start scripts by the dozen. A fork
of a process that has imported them starts in milliseconds and is otherwise what ``python script.py`` gives: its
own pid, argv, working directory, environment, stdin/stdout/stderr and ``__main__`` module; an uncaught exception,
``SystemExit``, signals, threads and exit hooks behave as at an interpreter's top level (``_run_as_main`` ends
the fork the way the interpreter ends, see there; a traceback shows one frame of this module below the script's).

What a fork cannot change: what was read while torch was imported. The server therefore serves only environments
that agree with its own on the variables read at start-up (``_STARTUP_PREFIXES``); any other request runs in a
fresh interpreter. The processes a script starts itself (spawned workers, torchrun, ``fabric run``) are real.

Server: ``python preloaded_python.py SOCKET``; client: ``PreloadedPython``, whose ``run`` is ``subprocess.run`` and
``start`` is ``subprocess.Popen`` (a ``PreloadedProcess`` in a fork), each falling back to them where it does not serve.
"""

from __future__ import annotations

import gc
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Variables whose value at interpreter start or at `import torch` decides behaviour later (thread pools, hashing,
# sys.path, allocators): a request that differs from the server on one of them gets a fresh interpreter.
_STARTUP_PREFIXES = ("PYTHON", "LD_", "OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "TORCH", "PYTORCH_", "MALLOC")
_PRELOAD = ("torch", "torch.distributed", "torch.multiprocessing", "fabric_core")
# numpy if installed; torch._dynamo is imported by every rank at its first optimizer (about 800 modules, see
# fabric_core.launchers.forked_workers).
_PRELOAD_IF_INSTALLED = ("numpy.random", "torch._dynamo")


def _startup_variables(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_STARTUP_PREFIXES)}


# --------------------------------------------------------------------------------------------------- the server
def _serve(path: str) -> str:
    """Accept run requests on the Unix socket ``path`` until killed (it holds nothing that needs saving).

    Returns the script's path in each forked child, which then runs it at top level (see the end of this file).
    The server has no thread: a fork copies only the calling thread.
    """
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)
    for name in _PRELOAD_IF_INSTALLED:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    # What was imported lives as long as the server: moved out of the collector's sight, a fork's collections do not
    # touch (and so copy) the pages it is on.
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(16)
    os.replace(path + ".tmp", path)  # the path clients wait for appears only once it accepts connections
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    running: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the client's connection)
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                conn, _ = listener.accept()
                try:
                    header, fds = _read_request(conn)
                except (OSError, ValueError):  # the client went away mid-request: not the server's end
                    conn.close()
                    continue
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    listener.close()
                    for pidfd, (_, other) in running.items():
                        os.close(pidfd)
                        other.close()
                    conn.close()
                    return _become_script(header, fds)
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (pid, conn)
                selector.register(pidfd, selectors.EVENT_READ)
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            else:
                pidfd = key.fd
                selector.unregister(pidfd)
                pid, conn = running.pop(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                try:
                    conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                except OSError:  # the client gave up on it
                    pass
                conn.close()


def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    """The three standard streams (as file descriptors) and the JSON line with argv, cwd and env."""
    _, fds, _, _ = socket.recv_fds(conn, 1, 3)
    with conn.makefile("rb") as stream:
        line = stream.readline()
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"a request carries 3 file descriptors, not {len(fds)}")
    return json.loads(line), fds


def _become_script(header: dict, fds: list[int]) -> str:
    """In the fork: take the request's streams, directory, environment and argv, as ``python script.py`` would."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    if header.get("new_session"):
        os.setsid()
    os.chdir(header["cwd"])
    os.environ.clear()
    os.environ.update(header["env"])
    script = os.path.abspath(header["argv"][0])
    sys.argv = [header["argv"][0], *header["argv"][1:]]
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()  # fresh interpreters seed it from the OS; a fork would copy the server's
    return script


def _run_as_main(script: str) -> None:
    """Execute ``script`` as the ``__main__`` module, the way ``python script.py`` does, and end the process.

    The end is the interpreter's (see ``_end``): what a script sees of it is the same, only the teardown of the
    modules the server imported is skipped.
    """
    import builtins
    import types
    from importlib.machinery import SourceFileLoader

    source = Path(script).read_bytes()
    main = types.ModuleType("__main__")
    main.__file__, main.__cached__, main.__builtins__ = script, None, builtins
    main.__loader__ = SourceFileLoader("__main__", script)
    sys.modules["__main__"] = main
    interrupted = False
    try:
        exec(compile(source, script, "exec"), main.__dict__)
        code = 0
    except SystemExit as exit_:
        code = _exit_status(exit_)
    except BaseException as error:  # an uncaught exception: the hook prints it (or the script's own hook handles it)
        interrupted = isinstance(error, KeyboardInterrupt)
        sys.excepthook(type(error), error, error.__traceback__)
        code = 1
        del error
    _end(main, code, interrupted)


def _exit_status(exit_: SystemExit) -> int:
    """The status ``raise SystemExit(code)`` gives at top level: None is 0, an int itself, anything else printed and 1."""
    if exit_.code is None:
        return 0
    if isinstance(exit_.code, int):
        return exit_.code
    print(exit_.code, file=sys.stderr)
    return 1


def _end(main: object, code: int, interrupted: bool) -> None:
    """End the fork as the interpreter ends, less the teardown of the modules the server imported.

    In order, as ``Py_FinalizeEx``: wait for the script's non-daemon threads, run the exit hooks, finalize the
    script's own objects (an unclosed file is flushed), flush the standard streams; an uncaught KeyboardInterrupt
    ends by SIGINT. Tearing down torch's modules as well would write to every page the server's objects are on
    (copy-on-write): 1-4 s of a 2-core machine per script, for objects that die with the process anyway.
    """
    import atexit
    import threading

    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter calls first at exit
    atexit._run_exitfuncs()
    vars(main).clear()
    gc.collect()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


# --------------------------------------------------------------------------------------------------- the client
class PreloadedPython:
    """A running server and the environment it was started with; ``run`` runs one script in a fork of it."""

    def __init__(self, env: dict[str, str], start_timeout: float = 600) -> None:
        self._folder = tempfile.mkdtemp(prefix="preloaded-python-")
        self.socket_path = os.path.join(self._folder, "server.sock")
        self._startup = _startup_variables(env)
        self._log = open(os.path.join(self._folder, "server.log"), "wb")
        self._server = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), self.socket_path],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=env,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + start_timeout
        while not os.path.exists(self.socket_path):
            if self._server.poll() is not None or time.monotonic() > deadline:
                self.close()
                log = Path(self._folder, "server.log").read_text(errors="replace")
                raise RuntimeError(f"the preloaded Python server did not start:\n{log[-4000:]}")
            time.sleep(0.05)

    def serves(self, command: list[str], env: dict[str, str]) -> bool:
        """Whether ``command`` with ``env`` can run in a fork: ``python script.py ...`` with the same start-up variables."""
        return (
            self._server.poll() is None
            and len(command) >= 2
            and command[0] == sys.executable
            and not command[1].startswith("-")
            and _startup_variables(env) == self._startup
        )

    def run(
        self, command: list[str], cwd: str | os.PathLike[str], env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Like ``subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)``.

        In a fork where the server ``serves`` the command and environment, else in a fresh interpreter.
        """
        if not self.serves(command, env):
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            conn = self._request(command, cwd, env, out_write, err_write, new_session=False)
        finally:
            os.close(out_write)
            os.close(err_write)
        replies = _Replies(conn)
        pid = _started(replies, conn)
        outputs: dict[int, bytes] = {}
        readers = [threading.Thread(target=_read_all, args=(fd, outputs), daemon=True) for fd in (out_read, err_read)]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + timeout
        try:
            reply = replies.next(deadline)
        except BaseException:  # interrupted (a pytest timeout, Ctrl-C): the script goes too, as with subprocess.run
            _kill(pid)
            raise
        if reply is None:  # past the timeout: killed, as subprocess.run does
            _kill(pid)
            replies.next(time.monotonic() + 60)
        for reader in readers:
            reader.join(timeout=max(1.0, deadline - time.monotonic()) if reply is not None else 5.0)
        conn.close()
        stdout = outputs.get(out_read, b"").decode(errors="replace")
        stderr = outputs.get(err_read, b"").decode(errors="replace")
        # past the timeout, or a process the script started still holds its output open
        if reply is None or any(reader.is_alive() for reader in readers):
            raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr)
        return subprocess.CompletedProcess(command, reply["returncode"], stdout, stderr)

    def start(
        self,
        command: list[str],
        cwd: str | os.PathLike[str],
        env: dict[str, str],
        stderr: int,
        start_new_session: bool = False,
    ) -> PreloadedProcess | subprocess.Popen[str]:
        """Like ``subprocess.Popen(command, stdout=PIPE, stderr=stderr, text=True, cwd=cwd, env=env, ...)``.

        ``stderr`` is a file descriptor the script writes to; with ``start_new_session`` the script leads a process
        group of its own (``os.killpg(process.pid, ...)`` reaches it and every process it starts). In a fork where
        the server ``serves`` the command and environment, else in a fresh interpreter.
        """
        if not self.serves(command, env):
            return subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=cwd,
                env=env,
                start_new_session=start_new_session,
            )
        out_read, out_write = os.pipe()
        try:
            conn = self._request(command, cwd, env, out_write, stderr, new_session=start_new_session)
        except BaseException:
            os.close(out_read)
            raise
        finally:
            os.close(out_write)
        return PreloadedProcess(command, conn, out_read)

    def _request(
        self,
        command: list[str],
        cwd: str | os.PathLike[str],
        env: dict[str, str],
        out: int,
        err: int,
        new_session: bool,
    ) -> socket.socket:
        """Ask the server to fork ``command`` with ``out`` and ``err`` as its stdout and stderr (the caller's to close)."""
        stdin = os.open(os.devnull, os.O_RDONLY)  # no test script reads its input; none may wait on a terminal
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.socket_path)
            socket.send_fds(conn, [b"R"], [stdin, out, err])
            header = {"argv": command[1:], "cwd": os.fspath(cwd), "env": env, "new_session": new_session}
            conn.sendall(json.dumps(header).encode() + b"\n")
        except BaseException:
            conn.close()
            raise
        finally:
            os.close(stdin)
        return conn

    def close(self) -> None:
        """Stop the server (the scripts it forked are not its to stop: each ended or was killed by ``run``)."""
        self._server.kill()
        self._server.wait()
        self._log.close()
        import shutil

        shutil.rmtree(self._folder, ignore_errors=True)


class PreloadedProcess:
    """A script running in a fork of the server, seen as ``subprocess.Popen`` shows a process (text stdout)."""

    def __init__(self, command: list[str], conn: socket.socket, stdout: int) -> None:
        self.args = command
        self._conn = conn
        self._replies = _Replies(conn)
        self.stdout = os.fdopen(stdout, "r")
        self.pid = _started(self._replies, conn)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code (negative: the signal) if the script has ended, else ``None``."""
        return self._wait(time.monotonic() + 0.001)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the script to end; ``subprocess.TimeoutExpired`` past ``timeout`` seconds."""
        code = self._wait(time.monotonic() + (timeout if timeout is not None else 10**7))
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def _wait(self, deadline: float) -> int | None:
        if self.returncode is None:
            reply = self._replies.next(deadline)
            if reply is not None:
                self.returncode = reply["returncode"]
                self._conn.close()
        return self.returncode


def _started(replies: _Replies, conn: socket.socket) -> int:
    """The pid of the fork the server started for a request (its first reply)."""
    reply = replies.next(deadline=time.monotonic() + 300)
    if reply is None:
        conn.close()
        raise RuntimeError("the preloaded Python server did not start the script within 300 s")
    return reply["pid"]


class _Replies:
    """The server's JSON lines on one connection, read with a deadline."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._buffer = b""

    def next(self, deadline: float) -> dict | None:
        """The next reply; ``None`` past ``deadline``; an error if the server closed the connection."""
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._conn.settimeout(left)
            try:
                chunk = self._conn.recv(4096)
            except TimeoutError:
                return None
            if not chunk:
                raise RuntimeError("the preloaded Python server closed the connection without an answer")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_all(fd: int, outputs: dict[int, bytes]) -> None:
    chunks = []
    with os.fdopen(fd, "rb", buffering=0) as stream:
        while chunk := stream.read(65536):
            chunks.append(chunk)
    outputs[fd] = b"".join(chunks)


def _die_with_parent() -> None:
    """The server ends with the test process (Linux: PR_SET_PDEATHSIG), never left behind."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    _run_as_main(_serve(sys.argv[1]))
