#!/usr/bin/env python3
"""memo-httpd's smoke test (CTest: httpd_smoke). Prints TAP; exits 1 if any check fails.

    smoke.py MEMO_HTTPD

In a temporary directory: generates a small database (2,000 items) on first start, then checks
the answers (documents, 404 by negative caching, 4xx for bad requests, a slow client closed
without stalling anyone), that /stats parses with Debian's prometheus_client parser, a 2-second
wrk run without errors, that 200 connections asking for one cold id at once make one database
query, and that SIGTERM during load stops the server cleanly (exit 0, no request cut off, memo
destroyed). Needs wrk and python3-prometheus-client (scripts/deps installs both). About 8 s.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from httpd_client import Server, get, quiesce, read_stats, run_wrk, stampede  # noqa: E402

ITEMS = 2000
number = 0
failed = 0


def check(condition, description, detail=""):
    global number, failed
    number += 1
    print(f"{'ok' if condition else 'not ok'} {number} - {description}", flush=True)
    if not condition:
        failed += 1
        for line in str(detail).splitlines()[:40]:
            print(f"#   {line}", flush=True)
    return condition


def raw_request(port, data, timeout=5):
    """Sends bytes as they are; returns the status code of the answer (0: none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except socket.timeout:
            pass
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: smoke.py MEMO_HTTPD")
    binary = sys.argv[1]
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        print("1..1\nnot ok 1 - python3-prometheus-client is not installed (scripts/deps installs it)")
        return 1
    if subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode != 0:
        print("1..1\nnot ok 1 - wrk is not installed (scripts/deps installs it)")
        return 1
    print("1..14", flush=True)

    with tempfile.TemporaryDirectory(prefix="memo-httpd-smoke.") as scratch:
        db = os.path.join(scratch, "smoke.db")
        options = ["--db", db, "--items", str(ITEMS), "--threads", "4", "--max-bytes", "256K",
                   "--negative-ttl", "60", "--timeout", "2"]
        start = time.monotonic()
        server = Server(binary, options, start_timeout=60)
        check(os.path.exists(db) and server.wait_for_log("generated"),
              f"generates the database on first start ({time.monotonic() - start:.1f} s)", server.log())
        url = server.url
        try:
            code, body = get(url + "/healthz")
            check(code == 200 and body == b"ok\n", "GET /healthz answers ok", (code, body))

            queries = read_stats(url)["memo_httpd_db_queries_total"]
            code, first = get(url + "/item/7")
            document = json.loads(first) if code == 200 else {}
            code2, second = get(url + "/item/7")
            s = read_stats(url)
            check(code == 200 and document.get("id") == 7 and 10 <= document["reviews"]["count"] <= 50
                  and len(document["similar"]) == 5 and second == first
                  and s["memo_httpd_db_queries_total"] == queries + 1,
                  "GET /item/7: a JSON document, the same twice, one query", (code, first[:200], s))

            code, body = get(url + f"/item/{ITEMS + 5}")
            code2, _ = get(url + f"/item/{ITEMS + 5}")
            s2 = read_stats(url)
            check(code == 404 and code2 == 404 and json.loads(body).get("error")
                  and s2["memo_httpd_db_queries_total"] == s["memo_httpd_db_queries_total"] + 1,
                  "an unknown id answers 404, the second time without a query (negative caching)", (code, body))

            bad = {"/item/abc": 400, "/item/-1": 400, "/item/1.5": 400, "/item/": 400, "/item/7/": 400,
                   "/item/99999999999999999999999999": 400, "/item/9223372036854775808": 400, "/nope": 404,
                   "/item": 404, "/" + "x" * 70000: 414}
            answers = {path[:40]: get(url + path)[0] for path in bad}
            answers["POST /item/7"] = get(url + "/item/7", method="POST")[0]
            answers["a header without a colon"] = raw_request(server.port, b"GET /item/1 HTTP/1.1\r\nBad\r\n\r\n")
            answers["a 40 KB header"] = raw_request(
                server.port, b"GET /item/1 HTTP/1.1\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
            expected = {path[:40]: code for path, code in bad.items()}
            expected.update({"POST /item/7": 405, "a header without a colon": 400, "a 40 KB header": 431})
            check(answers == expected, "bad requests get 4xx: non-numeric, negative and huge ids, unknown paths, "
                  "POST, a 70 KB URL, a malformed header, a 40 KB header", json.dumps(answers))
            # Not even a request line: libmicrohttpd closes the connection without an answer.
            garbage = raw_request(server.port, b"GARBAGE\r\n\r\n")
            code, _ = get(url + "/healthz")
            check(garbage == 0 and code == 200, "a line of garbage: the connection is closed, the server goes on",
                  (garbage, code))

            # A slow client: half a request line, then nothing. Meanwhile the server answers others,
            # and closes it once --timeout (2 s) passes.
            slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            slow.sendall(b"GET /item/1 HT")
            slow_since = time.monotonic()
            slow_result = {}

            def wait_for_close():
                try:
                    slow_result["data"] = slow.recv(4096)
                except OSError as error:
                    slow_result["data"] = repr(error).encode()
                slow_result["seconds"] = time.monotonic() - slow_since

            closer = threading.Thread(target=wait_for_close, daemon=True)
            closer.start()

            families = {}
            try:
                text = __import__("urllib.request").request.urlopen(url + "/stats", timeout=10).read().decode()
                families = {f.name: f for f in text_string_to_metric_families(text)}
                parsed = True
            except Exception as error:  # noqa: BLE001: any parse error fails the check
                parsed, text = False, f"{error}\n{text}"
            wanted = ["memo_hits", "memo_misses", "memo_waits", "memo_evictions", "memo_entries", "memo_bytes"]
            labelled = all(any(sample.labels.get("cache") == "items" for sample in families[name].samples)
                           for name in wanted if name in families)
            check(parsed and all(name in families for name in wanted + ["memo_httpd_db_queries"]) and labelled
                  and families["memo_httpd_db_queries"].samples[0].value == s2["memo_httpd_db_queries_total"]
                  and families["memo_misses"].samples[0].value == s2["memo_httpd_db_queries_total"],
                  "/stats parses with prometheus_client, with memo_*{cache=\"items\"} and "
                  "memo_httpd_db_queries_total", text if not parsed else sorted(families))

            w, _ = run_wrk(url, key_space=1500, zipf=1.2, seconds=2, connections=16)
            check(w["requests"] > 0 and w["non_2xx"] == 0 and sum(w["errors"].values()) == 0,
                  f"wrk for 2 s, Zipf over 1..1500: {w['requests']} requests, no error, no non-2xx", w)

            closer.join(5)
            check(slow_result.get("data") == b"" and 1.5 <= slow_result.get("seconds", 0) <= 4.5,
                  f"a slow client is closed after the timeout ({slow_result.get('seconds', 0):.1f} s) and "
                  "stalled no one meanwhile", slow_result)
            slow.close()

            queries = quiesce(server)
            codes, bodies, seconds = stampede(server.port, ITEMS, 200)
            s = read_stats(url)
            check(codes == {200: 200} and bodies == 1 and s["memo_httpd_db_queries_total"] == queries + 1,
                  f"200 connections asking for one cold id at once: 200 answers, one query ({seconds:.3f} s)",
                  (codes, bodies, s["memo_httpd_db_queries_total"] - queries))

            # SIGTERM in the middle of a wrk run: what is in flight is answered, then a clean exit.
            loaded = {}
            load = threading.Thread(target=lambda: loaded.update(
                run_wrk(url, key_space=1500, zipf=1.2, seconds=3, connections=16)[0]), daemon=True)
            load.start()
            time.sleep(1)
            stop_start = time.monotonic()
            status = server.stop(timeout=15)
            stop_seconds = time.monotonic() - stop_start
            load.join(30)
            log = server.log()
            check(status == 0 and stop_seconds < 5, f"SIGTERM during load: exit status 0 in {stop_seconds:.2f} s",
                  (status, log))
            check(" 0 cut off by the shutdown" in log and "destroyed" in log,
                  "no request cut off, the cache destroyed", log)
            errors = loaded.get("errors", {})
            check(loaded.get("requests", 0) > 0 and errors.get("read", 1) == 0 and errors.get("timeout", 1) == 0
                  and loaded.get("non_2xx", 1) == 0,
                  "wrk during the stop: every request it sent was answered (its only errors: connections "
                  "refused after the stop)", loaded)
        finally:
            if server.process.poll() is None:
                server.stop()
        server2 = Server(binary, options, start_timeout=30)
        status = server2.stop()
        check(status == 0 and "generating" not in server2.log(), "a second start reuses the database",
              server2.log())
    print(f"# {number - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
