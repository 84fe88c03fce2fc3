"""LiteLLM's proxy for side-by-side benchmarks: installed into its own virtualenv, configured.

:func:`ensure_installed` builds ``<cache>/tierwise-bench/litellm-<version>`` once: a venv with
``litellm[proxy]==<version>`` (never the compromised 1.82.7 / 1.82.8). LiteLLM's metadata
pins some packages at versions the registry may lack (e.g. a ``certifi`` newer than any
published); the normal install is tried first, and if the resolver fails the wheel is
installed with ``--no-deps`` and its base + ``[proxy]`` requirements are installed with the
unsatisfiable pins relaxed to the newest available — printed, so the reader knows.

:func:`write_config` writes a proxy config equivalent to the tierwise gateway under test:
the same fake upstream for the same model names, a master key (auth on), no database (no
spend logs), no retries, no callbacks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

VERSION = "1.109.1"
FORBIDDEN = {"1.82.7", "1.82.8"}
MASTER_KEY = "sk-litellm-bench-master"
_NO_MATCH = re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-\[\]]+)")


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "tierwise-bench"


def venv_dir(version: str = VERSION) -> Path:
    return cache_dir() / f"litellm-{version}"


def _pip(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    return subprocess.run([*command, *args], capture_output=True, text=True, check=False)


def ensure_installed(version: str = VERSION) -> Path:
    """The ``litellm`` executable of a venv with ``litellm[proxy]==version`` (built once)."""
    if version in FORBIDDEN:
        raise SystemExit(f"litellm {version} is a compromised release; refusing to install it")
    venv = venv_dir(version)
    exe = venv / "bin" / "litellm"
    if (venv / ".installed").exists():
        return exe
    print(f"installing litellm[proxy]=={version} into {venv} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    if _pip(venv, f"litellm[proxy]=={version}").returncode != 0:
        _install_relaxed(venv, version)
    (venv / ".installed").write_text(version)
    return exe


def _install_relaxed(venv: Path, version: str) -> None:
    wheels = venv / "wheels"
    download = [str(venv / "bin" / "pip"), "download", "--quiet", "--no-deps", "-d", str(wheels)]
    subprocess.run([*download, f"litellm=={version}"], check=True)
    wheel = next(wheels.glob(f"litellm-{version}-*.whl"))
    requirements = _requirements(wheel, version, extra="proxy")
    relaxed: list[str] = []
    for _ in range(len(requirements)):
        result = _pip(venv, *requirements)
        if result.returncode == 0:
            break
        missing = _NO_MATCH.search(result.stderr)
        if missing is None:
            raise SystemExit(f"installing LiteLLM's requirements failed:\n{result.stderr[-3000:]}")
        name = Requirement(missing.group(1)).name.lower()
        requirements = [r if Requirement(r).name.lower() != name else name for r in requirements]
        relaxed.append(missing.group(1))
    else:
        raise SystemExit("could not install LiteLLM's requirements")
    if _pip(venv, "--no-deps", str(wheel)).returncode != 0:
        raise SystemExit("installing the LiteLLM wheel failed")
    print(
        f"NOTE: litellm {version} installed with --no-deps; its [proxy] requirements installed "
        f"with these pins relaxed (not on the registry): {', '.join(relaxed) or 'none'}",
        flush=True,
    )


def _requirements(wheel: Path, version: str, extra: str) -> list[str]:
    """The wheel's base and ``extra`` requirements that apply to this Python, as strings."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"litellm-{version}.dist-info/METADATA").decode()
    environment = {**default_environment(), "extra": extra}
    kept = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = Requirement(line.split(":", 1)[1].strip())
        if requirement.marker is None or requirement.marker.evaluate(environment):
            requirement.marker = None
            kept.append(str(requirement))
    return sorted(set(kept))


def write_config(path: Path, upstream: str, models: list[str]) -> Path:
    """A proxy config: each model routed to the fake upstream's OpenAI API, auth on, no DB."""
    lines = ["model_list:"]
    for model in models:
        lines += [
            f"  - model_name: {model}",
            "    litellm_params:",
            f"      model: openai/{model}",
            f"      api_base: {upstream}/v1",
            "      api_key: sk-bench",
            "      max_retries: 0",
        ]
    lines += [
        "litellm_settings:",
        "  num_retries: 0",
        "  request_timeout: 60",
        "  telemetry: false",
        "  drop_params: true",
        "general_settings:",
        f"  master_key: {MASTER_KEY}",
        "  disable_spend_logs: true",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def command(exe: Path, config: Path, port: int, workers: int) -> list[str]:
    return [
        str(exe),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
    ]


def environment() -> dict[str, str]:
    """The proxy's environment: quiet logs, no telemetry or outbound calls we can avoid."""
    return {
        **os.environ,
        "LITELLM_LOG": "ERROR",
        "LITELLM_MODE": "PRODUCTION",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DISABLE_ADMIN_UI": "True",
        "NO_DOCS": "True",
    }


if __name__ == "__main__":
    print(ensure_installed())
