"""A network namespace behind a veth pair with random loss on its way out (nftables), made
and removed by the tests that use it (DESIGN.md, "Network tests": no netem on this kernel).

Traffic goes only between the namespace's address and the host end of its veth pair. Needs
root (CI runs as root) and Debian's iproute2 and nftables.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Namespace:
    """A namespace `name` at `inside`, reaching the host at `outside` over its veth pair."""

    name: str
    inside: str
    outside: str

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


def available() -> str | None:
    """Why namespaces cannot be made here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    return f"missing {', '.join(missing)} (Debian iproute2, nftables)" if missing else None


def _run(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True, timeout=10)


@contextmanager
def lossy_namespace(loss: float) -> Iterator[Namespace]:
    """A namespace whose veth drops `loss` (0..1) of the UDP datagrams it sends to the host."""
    tag = os.getpid() % 10000
    subnet = f"10.214.{os.getpid() % 250}"
    namespace = Namespace(f"invigil-loss-{tag}", f"{subnet}.2", f"{subnet}.1")
    host_end, inner_end = f"il{tag}a", f"il{tag}b"
    _run("ip", "netns", "add", namespace.name)
    try:
        _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", inner_end, "netns", namespace.name)
        _run("ip", "addr", "add", f"{namespace.outside}/24", "dev", host_end)
        _run("ip", "link", "set", host_end, "up")
        _run(*namespace.command("ip", "addr", "add", f"{namespace.inside}/24", "dev", inner_end))
        _run(*namespace.command("ip", "link", "set", inner_end, "up"))
        threshold = round(loss * 10000)
        _run(*namespace.command("nft", "-f", "-"), stdin=f"""
table inet invigil_loss {{
  chain out {{
    type filter hook output priority 0;
    oifname "{inner_end}" meta l4proto udp numgen random mod 10000 < {threshold} drop
  }}
}}
""")
        yield namespace
    finally:
        # Deleting the namespace deletes its end of the pair, and with it the host's end.
        subprocess.run(["ip", "netns", "del", namespace.name], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, timeout=10)
