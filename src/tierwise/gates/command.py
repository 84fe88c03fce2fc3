"""The command gate: run tests, a linter or a type checker on the answer's code.

The answer's Python (its fenced blocks, or its whole text) is written to ``answer_file`` in
a fresh temporary workspace, next to the given files: a template directory copied in, the
gate's own ``files`` and the request's ``metadata["workspace_files"]`` (path -> text). The
command runs there (no shell; ``python``/``python3`` mean this interpreter) with a timeout;
exit status 0 passes. On timeout the whole process group is killed.

The model's code runs with this user's rights: the workspace is a scratch directory, not a
sandbox. API keys and other secrets are removed from the command's environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from tierwise.errors import GateError
from tierwise.gates.base import GateResult
from tierwise.gates.text import python_code

if TYPE_CHECKING:
    from tierwise.messages import Request, Response
    from tierwise.strategies.base import TaskContext

DEFAULT_TIMEOUT_S = 60.0
OUTPUT_TAIL_CHARS = 1500
WORKSPACE_FILES_KEY = "workspace_files"
"""``Request.metadata`` key of extra files for the workspace: ``{relative path: text}``."""
_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)


def command_argv(command: str) -> list[str]:
    """``command`` split like a shell would (no shell runs it); ``python`` is this Python."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise GateError(f"gate command: cannot parse {command!r}: {exc}") from None
    if not argv:
        raise GateError("gate command: no command given (command:<cmd>)")
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def safe_environment() -> dict[str, str]:
    """This process's environment without anything that looks like a secret."""
    env = {k: v for k, v in os.environ.items() if not _SECRET.search(k)}
    return env | {"PYTHONDONTWRITEBYTECODE": "1"}


def _inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing absolute paths and ``..`` that would leave ``root``."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise GateError(f"gate command: workspace file {relative!r} must be a relative path")
    return root.joinpath(*parts)


def _tail(output: bytes) -> str:
    text = output.decode("utf-8", errors="replace").strip()
    return text if len(text) <= OUTPUT_TAIL_CHARS else "…" + text[-OUTPUT_TAIL_CHARS:]


class CommandGate:
    """Passes when ``command`` exits 0 in a workspace holding the answer's code."""

    def __init__(
        self,
        command: str,
        *,
        files: Mapping[str, str] | None = None,
        template: Path | None = None,
        answer_file: str = "solution.py",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._argv = command_argv(command)
        if template is not None and not template.is_dir():
            raise GateError(f"gate command: workspace template {template} is not a directory")
        self.files = dict(files or {})
        self.template = template
        self.answer_file = answer_file
        self.timeout_s = timeout_s
        self.name = f"command:{command}"

    def _prepare(self, root: Path, code: str, request: Request) -> None:
        if self.template is not None:
            shutil.copytree(self.template, root, dirs_exist_ok=True)
        extra = request.metadata.get(WORKSPACE_FILES_KEY) or {}
        if not isinstance(extra, Mapping):
            raise GateError(f"request metadata {WORKSPACE_FILES_KEY!r} must map paths to text")
        for relative, text in {**self.files, **extra, self.answer_file: code}.items():
            path = _inside(root, str(relative))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(text), "utf-8")

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        with tempfile.TemporaryDirectory(prefix="tierwise-gate-") as workspace:
            root = Path(workspace)
            await asyncio.to_thread(self._prepare, root, python_code(answer.text()), request)
            return await self._run(root)

    async def _run(self, cwd: Path) -> GateResult:
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv,
                cwd=cwd,
                env=safe_environment(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise GateError(
                f"gate {self.name}: cannot run {self._argv[0]}: {exc.strerror}"
            ) from None
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self.timeout_s)
        except TimeoutError:
            await _kill(process)
            return GateResult(False, 0.0, f"timed out after {self.timeout_s:g}s (killed)")
        finally:
            if process.returncode is None:  # cancelled while running: leave nothing behind
                await _kill(process)
        if process.returncode == 0:
            return GateResult(True, 1.0, "exit 0")
        return GateResult(False, 0.0, f"exit {process.returncode}: {_tail(output)}")


async def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill the command and everything it started (its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()
