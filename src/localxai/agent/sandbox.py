"""xAI's `code_execution` tool (OpenAI's `code_interpreter`): the model's Python, run in a bubblewrap
sandbox.

The sandbox (docs/agent-tools.md, "Code execution") sees a read-only /usr and the interpreter, a private
size-capped tmpfs as its work directory and /tmp, its own /proc and /dev, and nothing else: no network
(its own empty network namespace), no data directory, database, keys or environment of the server. It
runs as an unprivileged user (nobody, when the server runs as root) with limits on CPU time, address
space, processes, file size and open files, and every call has a wall-clock timeout; output beyond the
cap is cut with a line saying so.

One interpreter serves one response: the calls of its agent loop share variables and files, as a
notebook does. It is killed when the response ends, when a call runs out of time, or when it breaks a
limit; the next call then starts a fresh one (and is told so). A continued conversation
(`previous_response_id`) starts a fresh interpreter: the state of earlier responses is not kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from localxai.agent.base import Outcome, Session, Toolset, arguments, failed
from localxai.chat import ServerTool, Tool, ToolCall

log = logging.getLogger(__name__)

NOBODY = 65534
CODE_TOOL = Tool(
    name="code_execution",
    description=(
        "Run Python 3 code in a sandbox and get what it prints (and the value of a last expression). "
        "Variables and files persist between calls of this response. There is no network access."
    ),
    parameters=json.dumps(
        {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
        }
    ),
)

# Runs inside the sandbox: reads one JSON line per call from the server, runs the code with fds 1 and 2
# on a file (so a child process's output is caught too) and stdin on /dev/null, and answers one JSON line.
DRIVER = r"""
import ast, json, os, signal, sys, traceback
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file past the size limit fails to write, it does not kill
requests = os.fdopen(os.dup(0), "r")
answers = os.fdopen(os.dup(1), "w")
null = os.open("/dev/null", os.O_RDONLY)
os.dup2(null, 0)
limit = int(sys.argv[1])
driver = os.getpid()
scope = {"__name__": "__main__"}
OUT = "/tmp/.output"
for line in requests:
    code = json.loads(line)["code"]
    fd = os.open(OUT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        tree = ast.parse(code, "<code>")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<code>", "exec"), scope)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<code>", "eval"), scope)
            if value is not None:
                print(repr(value))
    except SystemExit:
        pass
    except BaseException as exc:  # the code's own frames only, not this driver's
        if os.getpid() == driver:
            traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
    finally:
        if os.getpid() != driver:  # a process the code forked: it never answers
            os._exit(0)
    try:  # what the call started ends with it (the sandbox's own pid namespace): nothing writes into the next
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    size = os.path.getsize(OUT)
    with open(OUT, "rb") as f:
        data = f.read(limit)
    answers.write(json.dumps({"output": data.decode("utf-8", "replace"), "more": max(0, size - limit)}) + "\n")
    answers.flush()
"""


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 30.0  # wall clock, per call
    cpu_s: int = 60  # CPU seconds, per interpreter (one response)
    memory_bytes: int = 1024 * 1024 * 1024  # address space
    processes: int = 64  # for the sandbox's user: a fork bomb stops here
    file_bytes: int = 64 * 1024 * 1024  # any one file written
    work_bytes: int = 128 * 1024 * 1024  # the work directory's tmpfs (and /tmp's)
    output_chars: int = 20_000  # what one call hands back


class CodeSandbox:
    """The `code_execution` executor. `start` checks once that the sandbox works here."""

    kinds: tuple[str, ...] = ("code_execution",)

    def __init__(self, limits: SandboxLimits | None = None, python: str | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self._bwrap = shutil.which("bwrap")
        self._candidates = [python] if python else ["/usr/bin/python3", os.path.realpath(sys.executable)]
        self._python: str | None = None
        self._problem: str | None = "the code sandbox has not been checked yet"

    def unavailable(self) -> str | None:
        return self._problem

    async def start(self) -> None:
        if self._bwrap is None:
            self._problem = (
                "code execution needs bubblewrap (the `bwrap` program) to sandbox the code; install it "
                "(Debian and Ubuntu: apt install bubblewrap)"
            )
            return
        for python in self._candidates:
            interpreter = _Interpreter(self._bwrap, python, self.limits)
            try:
                answer = await interpreter.run("print(6 * 7)", 20.0)
            except (OSError, RuntimeError, TimeoutError) as exc:
                log.info("the code sandbox cannot run %s: %s", python, exc)
                continue
            finally:
                await interpreter.close()
            if answer.output.strip() == "42":
                self._python, self._problem = python, None
                log.info("code execution: %s in a bubblewrap sandbox", python)
                return
        self._problem = "the code sandbox could not start a Python interpreter (see the server's log)"

    async def open(self, tool: ServerTool, session: Session) -> Toolset:
        assert self._bwrap is not None and self._python is not None
        toolset = CodeToolset(self._bwrap, self._python, self.limits)
        session.exits.push_async_callback(toolset.close)
        return toolset


class CodeToolset:
    kind = "code_execution"
    label: str | None = None
    functions: tuple[Tool, ...] = (CODE_TOOL,)

    def __init__(self, bwrap: str, python: str, limits: SandboxLimits) -> None:
        self._bwrap, self._python, self._limits = bwrap, python, limits
        self._interpreter: _Interpreter | None = None
        self._lock = asyncio.Lock()  # one call at a time in the shared interpreter
        self._restarted = False

    async def run(self, call: ToolCall) -> Outcome:
        code = arguments(call).get("code")
        if not isinstance(code, str):
            return failed("code_execution takes a string argument `code`")
        async with self._lock:
            interpreter = self._interpreter
            restarted = interpreter is None and self._restarted
            note = "[a fresh interpreter: earlier variables are gone]\n" if restarted else ""
            if interpreter is None:
                interpreter = self._interpreter = _Interpreter(self._bwrap, self._python, self._limits)
            try:
                answer = await interpreter.run(code, self._limits.timeout_s)
            except TimeoutError:
                await self._reset()
                return failed(f"the code ran longer than {self._limits.timeout_s:g} s and was stopped")
            except RuntimeError as exc:  # it died: a limit (CPU, memory) or an exit of the interpreter itself
                await self._reset()
                return failed(f"the interpreter stopped ({exc})")
        cut = f"\n[output truncated: {answer.more} more bytes]" if answer.more else ""
        return Outcome(note + answer.output + cut)

    async def _reset(self) -> None:
        if self._interpreter is not None:
            await self._interpreter.close()
        self._interpreter = None
        self._restarted = True

    async def close(self) -> None:
        if self._interpreter is not None:
            await self._interpreter.close()


@dataclass(frozen=True)
class _Answer:
    output: str
    more: int  # bytes of output beyond the cap


class _Interpreter:
    """One sandboxed Python process, started on its first call."""

    def __init__(self, bwrap: str, python: str, limits: SandboxLimits) -> None:
        self._command = _command(bwrap, python, limits)
        self._limits = limits
        self._process: asyncio.subprocess.Process | None = None

    async def run(self, code: str, timeout_s: float) -> _Answer:
        async with asyncio.timeout(timeout_s):
            if self._process is None:
                self._process = await asyncio.create_subprocess_exec(
                    *self._command,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env={"PATH": "/usr/bin:/bin"},  # bwrap itself (pid 1 inside) keeps none of the server's
                    preexec_fn=_confined(self._limits),
                    limit=8 * self._limits.output_chars + 4096,
                )
            process = self._process
            assert process.stdin is not None and process.stdout is not None and process.stderr is not None
            try:
                process.stdin.write(json.dumps({"code": code}).encode() + b"\n")
                await process.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # it is gone: the read below says why
            line = await process.stdout.readline()
            if not line:
                status = await process.wait()
                problem = (await process.stderr.read(2000)).decode(errors="replace").strip()
                raise RuntimeError(_why_stopped(status, problem))
            answer = json.loads(line)
            return _Answer(str(answer["output"]), int(answer["more"]))

    async def close(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # the whole session: bwrap, the interpreter, its children
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def _why_stopped(status: int, problem: str) -> str:
    if status in (-signal.SIGKILL, -signal.SIGXCPU, 128 + signal.SIGKILL, 128 + signal.SIGXCPU):
        return "it used more CPU time or memory than the sandbox allows"
    if problem.startswith("bwrap:"):
        return problem
    return f"exit status {status}"


def _command(bwrap: str, python: str, limits: SandboxLimits) -> list[str]:
    args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    args += ["--ro-bind", "/usr", "/usr"]
    for top in ("lib", "lib64", "lib32", "bin", "sbin"):
        path = Path("/") / top
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    prefix = Path(python).resolve().parent.parent
    if not str(prefix).startswith("/usr"):
        args += ["--ro-bind", str(prefix), str(prefix)]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(limits.work_bytes), "--tmpfs", "/tmp"]
    args += ["--size", str(limits.work_bytes), "--tmpfs", "/work", "--chdir", "/work"]
    args += ["--clearenv", "--setenv", "HOME", "/work", "--setenv", "PATH", "/usr/bin:/bin"]
    args += ["--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1"]
    return [*args, python, "-I", "-c", DRIVER, str(limits.output_chars)]


def _confined(limits: SandboxLimits):  # type: ignore[no-untyped-def]
    """Runs in the child before bwrap: its own session, an unprivileged user, the resource limits."""

    def confine() -> None:
        os.setsid()
        if os.getuid() == 0:  # root's processes are exempt from the process limit: become nobody
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        for which, value in (
            (resource.RLIMIT_CPU, limits.cpu_s),
            (resource.RLIMIT_AS, limits.memory_bytes),
            (resource.RLIMIT_NPROC, limits.processes),
            (resource.RLIMIT_FSIZE, limits.file_bytes),
            (resource.RLIMIT_NOFILE, 256),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(which, (value, value))

    return confine
