"""What examples/httpd/load and the smoke test share: a memo-httpd process on 127.0.0.1, /stats
read as a dict, wrk with zipf.lua, and the stampede client. Standard library only."""
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


class Server:
    """memo-httpd on 127.0.0.1 and a free port (--port 0: the port is read from its first line)."""

    def __init__(self, binary, options, start_timeout=120):
        command = [binary, "--address", "127.0.0.1", "--port", "0"] + list(options)
        self.stderr_lines = []
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_thread.start()
        # Generating the database comes before that line (about 10 s for the default size).
        line = self._readline(start_timeout)
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line or "")
        if not match:
            self.process.kill()
            self.process.wait()
            self._stderr_thread.join(5)
            raise RuntimeError(f"memo-httpd did not start: {line!r}\n" + "".join(self.stderr_lines))
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def _read_stderr(self):
        for line in self.process.stderr:
            self.stderr_lines.append(line)

    def _readline(self, timeout):
        result = []
        reader = threading.Thread(target=lambda: result.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        return result[0] if result else None

    def log(self):
        return "".join(self.stderr_lines)

    def wait_for_log(self, text, timeout=5):
        """Whether the server's stderr says text within timeout seconds (stderr is read by a thread
        of its own, which may lag behind the first line on stdout)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() >= deadline or self.process.poll() is not None:
                return text in self.log()
            time.sleep(0.01)
        return True

    def stats(self):
        return read_stats(self.url)

    def stop(self, timeout=30):
        """SIGTERM, then waits; returns the exit status (killed after timeout: -9)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        self._stderr_thread.join(5)
        return status


def read_stats(url):
    """/stats as {"name{labels}": value}, and {"name": value} for its first sample too."""
    with urllib.request.urlopen(url + "/stats", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
            values.setdefault(name.split("{")[0], float(value))
    return values


def get(url, timeout=30, method="GET"):
    """(status, body) of one request; 4xx and 5xx are answers too."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def quiesce(server, timeout=30):
    """Waits until nothing is in flight but this /stats and the query count has stood still for
    0.2 s (wrk's last requests answered); returns the query count."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        s = server.stats()
        queries = s["memo_httpd_db_queries_total"]
        if s["memo_httpd_requests_in_flight"] <= 1 and queries == last:
            return queries
        last = queries
        time.sleep(0.2)
    raise RuntimeError("the server did not go idle")


def run_wrk(url, key_space, zipf, seconds, connections, threads=2, seed=1, ids_file=None):
    """wrk with zipf.lua; returns (its JSON figures, the set of ids asked for, or None)."""
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
               "-s", os.path.join(HERE, "zipf.lua"), url, "--", str(key_space), str(zipf), str(seed)]
    if ids_file:
        command.append(ids_file)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    ids = None
    if ids_file:
        with open(ids_file) as f:
            ids = {int(line) for line in f if line.strip()}
    return json.loads(lines[-1]), ids


def stampede(port, item_id, connections, timeout=60):
    """Opens `connections` connections, lets the server accept them, then sends GET /item/<id> on
    all of them back to back and reads every answer. Returns ({status: count} (0: no answer),
    the number of distinct 200 bodies, seconds from the first send to the last answer)."""
    sockets = []
    try:
        for _ in range(connections):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sockets.append(s)
        time.sleep(0.3)  # every connection accepted and idle in the server's pool
        request = f"GET /item/{item_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        start = time.monotonic()
        for s in sockets:
            s.sendall(request)
        selector = selectors.DefaultSelector()
        buffers = {}
        for s in sockets:
            s.setblocking(False)
            selector.register(s, selectors.EVENT_READ)
            buffers[s] = b""
        answers = {}
        deadline = start + timeout
        while len(answers) < len(sockets) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                s = key.fileobj
                chunk = s.recv(65536)
                buffers[s] += chunk
                head, separator, body = buffers[s].partition(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head) if separator else None
                if length and len(body) >= int(length.group(1)):
                    answers[s] = (int(head.split()[1]), body[:int(length.group(1))])
                    selector.unregister(s)
                elif not chunk:  # closed before a whole answer
                    answers[s] = (0, b"")
                    selector.unregister(s)
        elapsed = time.monotonic() - start
    finally:
        for s in sockets:
            s.close()
    codes = {}
    for code, _ in answers.values():
        codes[code] = codes.get(code, 0) + 1
    if len(answers) < len(sockets):
        codes[0] = codes.get(0, 0) + len(sockets) - len(answers)
    return codes, len({body for code, body in answers.values() if code == 200}), elapsed


def log(message):
    print(message, file=sys.stderr, flush=True)
