"""Running test code on several emulated CPU devices: ``XLA_FLAGS`` must be set before JAX
starts, and the rest of the suite runs on one device, so the code runs in a fresh interpreter."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(args, devices=4, timeout=600, **env):
    """``python *args`` from the repository root with ``devices`` forced CPU devices (and the
    extra environment variables ``env``); returns the finished process, output captured."""
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        **env,
    )
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
