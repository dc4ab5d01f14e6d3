"""A real nginx serving a directory on 127.0.0.1 for tests: its own config, logs, pid and temp paths
under a private directory (the package's /etc/nginx config is never read, nothing listens on port 80).

    with NginxServer(root_dir) as srv:
        url = srv.url("shard-0.tar")

nginx's static module answers Range requests (206 + Content-Range) out of the box. The server runs in
the foreground (daemon off) as a child of the test, so stop() (also called on exit from a with-block
and at interpreter exit) can always terminate it.
"""
import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

NGINX = os.environ.get("UPMOE_NGINX", "/usr/sbin/nginx")

CONFIG = """\
{user_line}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{
    worker_connections 128;
}}
http {{
    log_format upm '$remote_addr "$request" $status $body_bytes_sent range="$http_range"';
    access_log {prefix}/access.log upm;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 10;
    server {{
        listen 127.0.0.1:{port}{tls_listen};
        server_name localhost;{tls_lines}
        root {root};
        location / {{
        }}
    }}
}}
"""


def free_port():
    """A port that was free a moment ago on 127.0.0.1 (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, timeout=10.0):
    """True once something accepts connections on 127.0.0.1:port; False if proc exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class NginxServer:
    """nginx serving `root` (a directory) at http://127.0.0.1:PORT/, or https:// with tls=(cert, key)."""

    def __init__(self, root, tls=None):
        if not os.access(NGINX, os.X_OK):
            raise RuntimeError(f"{NGINX} is not installed (tools/setup installs nginx-light)")
        self.root = os.path.abspath(root)
        self.prefix = None
        self.proc = None
        self.port = None
        self.tls = tls

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def url(self, path=""):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/{path}"

    def _write_config(self, port):
        user_line = ""
        if os.geteuid() == 0:
            # workers would drop to "nobody", which cannot read a 0700 temporary directory
            user_line = f"user {pwd.getpwuid(0).pw_name};"
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            tls_listen = " ssl" if self.tls else ""
            tls_lines = (f"\n        ssl_certificate {self.tls[0]};\n        ssl_certificate_key {self.tls[1]};"
                         if self.tls else "")
            f.write(CONFIG.format(user_line=user_line, prefix=self.prefix, port=port, root=self.root,
                                  tls_listen=tls_listen, tls_lines=tls_lines))
        return conf

    def start(self):
        self.prefix = tempfile.mkdtemp(prefix="upmoe-nginx-")
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(self.prefix, "tmp", d))
        last = ""
        for _ in range(5):  # another process may grab the free port before nginx binds it
            port = free_port()
            conf = self._write_config(port)
            err_log = os.path.join(self.prefix, "error.log")
            self.proc = subprocess.Popen(
                [NGINX, "-p", self.prefix, "-c", conf, "-e", err_log, "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if wait_listening(port, self.proc):
                self.port = port
                _live.add(self)
                return self
            last = self._reap()
        self.stop()
        raise RuntimeError(f"nginx did not start: {last}")

    def _reap(self):
        """Stops the current process if any; returns what it wrote to stderr and its error log."""
        out = ""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            out = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None
        log = os.path.join(self.prefix or "", "error.log")
        if self.prefix and os.path.exists(log):
            with open(log, errors="replace") as f:
                out += f.read()[-2000:]
        return out

    def access_log(self):
        """The access log lines so far: '127.0.0.1 "GET /x HTTP/1.1" 206 1234 range="bytes=10-"'."""
        path = os.path.join(self.prefix, "access.log")
        if not os.path.exists(path):
            return []
        with open(path, errors="replace") as f:
            return f.read().splitlines()

    def stop(self):
        """Stops nginx (SIGTERM = fast shutdown of master and worker) and removes its directory."""
        self._reap()
        _live.discard(self)
        if self.prefix:
            shutil.rmtree(self.prefix, ignore_errors=True)
            self.prefix = None
        self.port = None


_live = set()


@atexit.register
def _stop_all():
    for srv in list(_live):
        srv.stop()
