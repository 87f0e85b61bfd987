"""Two network namespaces joined by a veth pair: a stand-in for two hosts.

    with VethPair() as topo:                   # needs root; raises NetnsError
        server_prefix = topo.server_prefix     # ["ip", "netns", "exec", NS]
        topo.server_ip                         # "10.77.0.1"

Names carry the runner's pid so parallel runs don't collide. The namespaces
(and with them the veth pair) are deleted on exit, on Ctrl-C and, through
atexit, on a crash. The 10.77.0.0/24 addresses exist only inside them.
"""

import atexit
import os
import subprocess

SERVER_IP = "10.77.0.1"
CLIENT_IP = "10.77.0.2"


class NetnsError(Exception):
    pass


def can_use_netns():
    """(ok, reason). Root and a working `ip` are needed."""
    if os.geteuid() != 0:
        return False, "needs root to create network namespaces (run as root or with sudo)"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"`ip netns` is not usable here: {e}"
    return True, ""


def _ip(*args):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class VethPair:
    def __init__(self, tag=None):
        tag = tag or str(os.getpid())
        self.server_ns = f"rl-srv-{tag}"
        self.client_ns = f"rl-cli-{tag}"
        self.server_ip = SERVER_IP
        self.client_ip = CLIENT_IP
        self._created = []

    @property
    def server_prefix(self):
        return ["ip", "netns", "exec", self.server_ns]

    @property
    def client_prefix(self):
        return ["ip", "netns", "exec", self.client_ns]

    def __enter__(self):
        atexit.register(self.delete)
        try:
            for ns in (self.server_ns, self.client_ns):
                _ip("netns", "add", ns)
                self._created.append(ns)
            _ip("link", "add", "rl-veth-s", "netns", self.server_ns, "type", "veth",
                "peer", "name", "rl-veth-c", "netns", self.client_ns)
            for ns, dev, addr in ((self.server_ns, "rl-veth-s", self.server_ip),
                                  (self.client_ns, "rl-veth-c", self.client_ip)):
                _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except NetnsError:
            self.delete()
            raise
        return self

    def delete(self):
        # Deleting a namespace destroys its end of the veth, which takes the
        # peer end with it.
        while self._created:
            ns = self._created.pop()
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)

    def __exit__(self, *exc):
        self.delete()
        return False
