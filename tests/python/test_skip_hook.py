"""The three ways a Python scheduler hands a skipped run to janitor, with the standard library
only: the HTTP hook through the README's client (clients/python/janitor_skip.py), `janitor
skip` from a subprocess, and nothing at all (the sweep finds the run).

Run by tests/scheduler_hook.rs, which seeds the runs, serves janitor and passes:
JANITOR_URL, JANITOR_TOKEN, JANITOR_BIN and the janitor settings (DATABASE_URL, REDIS_URL, …)
in the environment. It checks the queue from Rust afterwards: every run enqueued once.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import unittest
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from janitor_skip import janitor_skip  # noqa: E402

URL = os.environ["JANITOR_URL"]
TOKEN = os.environ["JANITOR_TOKEN"]
BIN = os.environ["JANITOR_BIN"]


class Flaky:
    """A proxy in front of janitor that drops the first connection without an answer and
    answers the second with a 503, then forwards: what a restart or a load balancer does."""

    def __init__(self):
        self.requests = 0
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                flaky.requests += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if flaky.requests == 1:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if flaky.requests == 2:
                    self.reply(503, b'{"error":"restarting"}')
                    return
                forward = urllib.request.Request(URL + self.path, data=body, method="POST",
                                                 headers=dict(self.headers))
                try:
                    with urllib.request.urlopen(forward) as r:
                        self.reply(r.status, r.read())
                except urllib.error.HTTPError as e:
                    self.reply(e.code, e.read())

            def reply(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class HttpHook(unittest.TestCase):
    def test_a_skip_is_enqueued_once_and_a_repeat_is_already_queued(self):
        first = janitor_skip(URL, TOKEN, "skip-http")
        self.assertEqual(first["enqueued"], 1, first)
        self.assertEqual(first["agent"], "agent one")
        self.assertGreater(first["delay_secs"], 0, first)
        again = janitor_skip(URL, TOKEN, "skip-http")
        self.assertEqual(again["enqueued"], 0, again)
        self.assertEqual(again["already_queued"], 1, again)
        self.assertEqual(again["task_id"], first["task_id"])

    def test_the_client_retries_through_a_lost_connection_and_a_503(self):
        flaky = Flaky()
        try:
            receipt = janitor_skip(flaky.url, TOKEN, "skip-flaky")
        finally:
            flaky.close()
        self.assertEqual(flaky.requests, 3)
        self.assertEqual(receipt["enqueued"], 1, receipt)

    def test_a_run_whose_row_is_not_committed_yet_is_enqueued_by_its_agent(self):
        receipt = janitor_skip(URL, TOKEN, "skip-early", agent="agent one")
        self.assertEqual(receipt["enqueued"], 1, receipt)
        with self.assertRaises(urllib.error.HTTPError) as refused:
            janitor_skip(URL, TOKEN, "skip-unknown")
        self.assertEqual(refused.exception.code, 404)

    def test_a_refusal_is_not_retried(self):
        for token, run, status in [("wrong", "skip-http", 401), (TOKEN, "run-live", 409)]:
            flaky = Flaky()
            flaky.requests = 2  # straight through to janitor
            try:
                with self.assertRaises(urllib.error.HTTPError) as refused:
                    janitor_skip(flaky.url, token, run)
            finally:
                flaky.close()
            self.assertEqual(refused.exception.code, status)
            self.assertEqual(flaky.requests, 3, "one request, no retry")
            self.assertIn("error", json.loads(refused.exception.read()))


def janitor(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60)


class CliHook(unittest.TestCase):
    def test_janitor_skip_from_a_subprocess(self):
        first = janitor("skip", "--execution-id", "skip-cli", "--json")
        self.assertEqual(first.returncode, 0, first.stderr)
        receipt = json.loads(first.stdout)
        self.assertEqual(receipt["enqueued"], 1, receipt)
        again = json.loads(janitor("skip", "--execution-id", "skip-cli", "--json").stdout)
        self.assertEqual(again["already_queued"], 1, again)
        refused = janitor("skip", "--execution-id", "run-live")
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("not skipped", refused.stderr)


class NoHook(unittest.TestCase):
    def test_the_sweep_finds_a_skipped_run_nobody_handed_over(self):
        swept = janitor("sweep", "--json")
        self.assertEqual(swept.returncode, 0, swept.stderr)
        report = json.loads(swept.stdout)
        self.assertEqual(report["kinds"]["finalize_skipped"]["found"], 1, report["kinds"])
        self.assertEqual(report["kinds"]["finalize_skipped"]["enqueued"], 1, report["kinds"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
