"""Loading a script from bench/ (not a package) as a module, for the tests of the benchmarks."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).parents[1] / "bench"


def load_bench_module(name: str) -> ModuleType:
    """``bench/<name>.py`` as the module ``bench_<name>``."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@contextmanager
def fake_upstream(chunks: int = 5) -> Iterator[str]:
    """bench/fake_upstream.py serving on 127.0.0.1 in a thread (1 ms latency); its base URL."""
    bench = load_bench_module("fake_upstream")
    sock = bench.listening_socket(0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    options = bench.Options(latency_s=0.001, chunks=chunks, chunk_interval_s=0.0005)
    server = asyncio.run_coroutine_threadsafe(bench.start_server(sock, options), loop).result(10)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        asyncio.run_coroutine_threadsafe(_shutdown(server), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        sock.close()


async def _shutdown(server: asyncio.Server) -> None:
    """Stop listening and end the open keep-alive connections."""
    server.close()
    handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for handler in handlers:
        handler.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    await server.wait_closed()
