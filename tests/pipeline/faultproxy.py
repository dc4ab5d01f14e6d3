"""A test-only HTTP proxy in front of a real server (nginx) that injects faults by a rule table, and
records every request it saw (path, Range header, what it did) so tests can assert retry and resume.

Loopback only, one request per connection (it answers "Connection: close"), at most MAX_CONNECTIONS
handled at once, every socket with a timeout; stop() ends stalls early. Rules are tried in order; the
first whose path matches and whose count is not used up applies to the request (count=None: always):

    Rule("/shard-1.tar", "reset", after=50000)   # send the headers and 50000 body bytes, then a TCP RST
    Rule("/shard-1.tar", "close", after=50000)   # the same but a clean close (a short body)
    Rule("/shard-1.tar", "status", status=500, count=2)   # answer 500 to the first 2 requests
    Rule("/shard-1.tar", "status", status=404)            # pretend it is missing
    Rule("/shard-1.tar", "stall", seconds=5)              # accept, send nothing for 5 s, close
    Rule("/shard-1.tar", "stall", seconds=5, after=1000)  # headers + 1000 bytes, then nothing for 5 s
    Rule("/shard-1.tar", "ignore_range")                  # forward without Range: the server sends 200
Range headers are forwarded unchanged otherwise.
"""
import fcntl
import http.client
import socket
import socketserver
import struct
import termios
import threading
import time

MAX_CONNECTIONS = 32
MAX_HEAD = 64 * 1024
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


class Rule:
    def __init__(self, path, action, count=1, after=0, status=500, seconds=5.0):
        if action not in ("reset", "close", "status", "stall", "ignore_range"):
            raise ValueError(f"unknown fault action {action!r}")
        self.path, self.action, self.count = path, action, count
        self.after, self.status, self.seconds = after, status, seconds
        self.used = 0

    def matches(self, path):
        return (self.path is None or path == self.path) and (self.count is None or self.used < self.count)


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class FaultProxy:
    def __init__(self, upstream_port, rules=()):
        self.upstream_port = upstream_port
        self.rules = list(rules)
        self.requests = []  # dicts: path, range, action, status, sent
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._stopping = threading.Event()
        self._server = None
        self._thread = None
        self.port = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def url(self, path=""):
        return f"http://127.0.0.1:{self.port}/{path}"

    def add(self, rule):
        with self._lock:
            self.rules.append(rule)

    def seen(self, path=None):
        """Requests recorded so far (for one path, or all)."""
        with self._lock:
            return [dict(r) for r in self.requests if path is None or r["path"] == path]

    def start(self):
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                if not proxy._slots.acquire(blocking=False):
                    return  # over the bound: drop the connection
                try:
                    proxy._handle(self.request)
                except OSError:
                    pass  # the client went away (it gave up on a stall, or we reset it)
                finally:
                    proxy._slots.release()

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # ---- one request ----

    def _sleep(self, seconds):
        self._stopping.wait(seconds)

    @staticmethod
    def _read_head(sock):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
            if len(data) > MAX_HEAD:
                return None
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return method, target, headers

    def _pick(self, path, rng):
        with self._lock:
            rule = next((r for r in self.rules if r.matches(path)), None)
            if rule is not None:
                rule.used += 1
            rec = {"path": path, "range": rng, "action": rule.action if rule else "forward", "status": None, "sent": 0}
            self.requests.append(rec)
            return rule, rec

    def _handle(self, sock):
        sock.settimeout(30)
        parsed = self._read_head(sock)
        if parsed is None:
            return
        method, target, headers = parsed
        path = target.split("?", 1)[0]
        rule, rec = self._pick(path, headers.get("range"))
        action = rule.action if rule else "forward"
        if action == "status":
            body = f"injected {rule.status}\n".encode()
            sock.sendall(f"HTTP/1.1 {rule.status} Injected\r\nContent-Length: {len(body)}\r\n"
                         f"Content-Type: text/plain\r\nConnection: close\r\n\r\n".encode() + body)
            rec["status"] = rule.status
            return
        if action == "stall" and not rule.after:
            self._sleep(rule.seconds)
            return
        self._forward(sock, method, target, headers, rule, rec)

    def _forward(self, sock, method, target, headers, rule, rec):
        action = rule.action if rule else "forward"
        up = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            fwd = {"Host": headers.get("host", "127.0.0.1"), "User-Agent": headers.get("user-agent", "faultproxy")}
            if "range" in headers and action != "ignore_range":
                fwd["Range"] = headers["range"]
            up.request(method, target, headers=fwd)
            resp = up.getresponse()
            rec["status"] = resp.status
            head = [f"HTTP/1.1 {resp.status} {resp.reason}"]
            head += [f"{k}: {v}" for k, v in resp.getheaders() if k.lower() not in HOP_HEADERS]
            head.append("Connection: close")
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            limit = rule.after if action in ("reset", "close", "stall") else None
            while True:
                chunk = resp.read(16384)
                if not chunk:
                    break
                if limit is not None and rec["sent"] + len(chunk) >= limit:
                    chunk = chunk[:limit - rec["sent"]]
                    sock.sendall(chunk)
                    rec["sent"] += len(chunk)
                    self._fault(sock, rule)
                    return
                sock.sendall(chunk)
                rec["sent"] += len(chunk)
        finally:
            up.close()

    def _drain(self, sock, timeout=5.0):
        """Waits until the peer has acknowledged all bytes sent (Linux SIOCOUTQ reaches 0): an RST
        discards what is still queued on our side, but not what the peer's kernel already holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopping.is_set():
            queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0)))[0]
            if queued == 0:
                return
            time.sleep(0.01)

    def _fault(self, sock, rule):
        if rule.action == "stall":
            self._sleep(rule.seconds)
        elif rule.action == "reset":
            self._drain(sock)  # every byte sent so far reaches the client before the RST
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # now, before socketserver's shutdown(SHUT_WR) could send a clean FIN
        # "close": a clean FIN after a short body
