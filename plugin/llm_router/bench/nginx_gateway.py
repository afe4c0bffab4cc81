"""A real nginx with lua-nginx-module as an APISIX stand-in: the runner called from nginx's access phase.

APISIX is nginx + LuaJIT (OpenResty) and calls the runner from Lua over a Unix socket. Where APISIX cannot be
installed, Debian's nginx with its Lua module runs `lua/ext_plugin.lua`, this project's client of the same
protocol, on the same kind of worker: the runner is measured and tested behind a real gateway process, not only
behind the Python emulator. Each server block is one setup: a port, an optional runner socket and route conf.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from llm_router.bench.apisix import runner_pids
from llm_router.gateways.envoy.stack import free_port

LUA_DIR = Path(__file__).resolve().parent / "lua"
MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules")
PACKAGES = "nginx-light and libnginx-mod-http-lua (Debian)"


class NginxNotFound(RuntimeError):
    """No nginx binary with the Lua module on this machine."""


@dataclass(frozen=True)
class Nginx:
    """The nginx binary and the directory holding its Lua module."""

    binary: str
    modules: str


def find_nginx() -> Nginx:
    """nginx and its Lua module, or NginxNotFound naming the packages that provide them."""
    binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if not binary:
        raise NginxNotFound(f"no nginx binary; install {PACKAGES}")
    for d in MODULE_DIRS:
        if os.path.exists(os.path.join(d, "ngx_http_lua_module.so")):
            return Nginx(binary, d)
    raise NginxNotFound(f"nginx has no Lua module (ngx_http_lua_module.so); install {PACKAGES}")


@dataclass
class Server:
    """One server block: without `socket` a plain proxy, with it the runner is called before proxying."""

    name: str
    socket: str | None = None
    conf: str = '{"policy": "default"}'
    post_resp: bool = False  # also ext-plugin-post-resp: the Lua client calls the upstream and asks the runner
    usage_log_port: int | None = None  # also http-logger's part: streams' bodies posted to this port's /v1/usage-log
    usage_log_key: str | None = None  # ... with `Authorization: Bearer <key>` (http-logger's auth_header)
    port: int = field(default_factory=free_port)


def _lua_string(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _preamble(workdir: Path) -> str:
    """One worker (as the APISIX measurements in the notes), files under `workdir`, up to the http block's opening."""
    return f"""daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body;"""


def gateway_conf(nginx: Nginx, workdir: Path, servers: list[Server], upstreams: dict[str, int], *,
                 default: str, route_header: str = "x-llm-router-upstream") -> str:
    """nginx.conf of the gateway: a server block per setup, an upstream block per provider."""
    ups = "\n".join(f"  upstream llm_{name} {{ server 127.0.0.1:{port}; keepalive 64; }}" for name, port in upstreams.items())
    mapping = ", ".join(f"[{_lua_string(name)}] = 'llm_{name}'" for name in upstreams)
    addrs = ", ".join(f"llm_{name} = {{'127.0.0.1', {port}}}" for name, port in upstreams.items())
    blocks = []
    for s in servers:
        plugin = ""
        if s.socket:
            plugin = (f"      set $ext_socket {s.socket};\n      set $ext_conf {_lua_string(s.conf)};\n"
                      "      access_by_lua_block { require('ext_plugin').access() }\n")
        if s.socket and s.post_resp:
            upstream = "      content_by_lua_block { require('ext_plugin').post_resp() }\n"
            if s.usage_log_port:
                auth = f"Bearer {s.usage_log_key}" if s.usage_log_key else ""
                upstream += (f"      set $usage_log_port {s.usage_log_port};\n      set $usage_log_auth {_lua_string(auth)};\n"
                             "      body_filter_by_lua_block { require('ext_plugin').body_copy() }\n"
                             "      log_by_lua_block { require('ext_plugin').usage_log() }\n")
        else:
            upstream = ("      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n"
                        "      proxy_set_header Host $upstream_host;\n      proxy_buffering off;\n"
                        "      proxy_read_timeout 600s;\n      proxy_pass http://$llm_upstream$upstream_uri;\n")
        blocks.append(f"""  server {{
    listen 127.0.0.1:{s.port};
    location / {{
      set $upstream_uri $request_uri;
      set $upstream_host $host;
      set $llm_upstream llm_{default};
{plugin}{upstream}    }}
  }}""")
    return f"""load_module {nginx.modules}/ndk_http_module.so;
load_module {nginx.modules}/ngx_http_lua_module.so;
{_preamble(workdir)}
  proxy_temp_path {workdir}/proxy;
  client_body_buffer_size 1m;
  client_max_body_size 20m;
  keepalive_requests 1000000;
  lua_package_path '{LUA_DIR}/?.lua;;';
  init_by_lua_block {{
    local ext = require('ext_plugin')
    ext.route_header = {_lua_string(route_header)}
    ext.upstreams = {{{mapping}}}
    ext.addrs = {{{addrs}}}
  }}
{ups}
{chr(10).join(blocks)}
}}
"""


def static_conf(nginx: Nginx, workdir: Path, port: int, body: bytes) -> str:
    """nginx.conf of an upstream that answers every request with `body` (JSON), reading nothing it need not."""
    text = body.decode().replace("\\", "\\\\").replace("'", "\\'")
    return f"""{_preamble(workdir)}
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{text}'; }}
  }}
}}
"""


class NginxProcess:
    """An nginx master (and its worker) on a generated config, stopped by PID."""

    def __init__(self, nginx: Nginx, workdir: Path, conf: str, ports: list[int]):
        self.nginx, self.workdir, self.ports = nginx, workdir, ports
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "nginx.conf").write_text(conf)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> NginxProcess:
        conf = str(self.workdir / "nginx.conf")
        log = str(self.workdir / "error.log")
        check = subprocess.run([self.nginx.binary, "-t", "-e", log, "-p", str(self.workdir), "-c", conf], capture_output=True,
                               text=True, timeout=60, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx refused its config: {check.stderr.strip()}")
        self.proc = subprocess.Popen([self.nginx.binary, "-e", log, "-p", str(self.workdir), "-c", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        waiting = list(self.ports)
        while waiting:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", waiting[0]), timeout=1):
                    waiting.pop(0)
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"nginx did not listen on {waiting[0]} in {timeout:g} s")
                time.sleep(0.02)
        return self

    def worker_pids(self) -> list[int]:
        """The master's children (the worker)."""
        return runner_pids(self.proc.pid)[1:] if self.proc is not None else []

    def error_log(self) -> str:
        try:
            return (self.workdir / "error.log").read_text()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)  # graceful: the worker finishes what it holds
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stderr:
            self.proc.stderr.close()
