"""Running test code on several emulated CPU devices: ``XLA_FLAGS`` must be set before JAX
starts, and the rest of the suite runs on one device, so the code runs in a fresh interpreter."""

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(devices, extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.update(extra)
    return env


def free_port() -> int:
    """A loopback TCP port free now (for a ``jax.distributed`` coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(argv_of, num_processes=2, devices=1, timeout=600, **env):
    """The processes of one multi-process job, started together from the repository root:
    process ``pid`` runs ``python *argv_of(pid)`` with ``devices`` forced CPU devices. Returns
    ``[(returncode, stdout, stderr)]`` by process id once all have ended."""
    procs = [
        subprocess.Popen(
            [sys.executable, *argv_of(pid)],
            env=_env(devices, env),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in range(num_processes)
    ]
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs, strict=True)]


def run_python(args, devices=4, timeout=600, **env):
    """``python *args`` from the repository root with ``devices`` forced CPU devices (and the
    extra environment variables ``env``); returns the finished process, output captured."""
    return subprocess.run(
        [sys.executable, *args], env=_env(devices, env), cwd=ROOT, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip
