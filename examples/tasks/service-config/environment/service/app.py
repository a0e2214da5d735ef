#!/usr/bin/env python3
"""notes-service: a tiny read-only HTTP service built on http.server.

Usage: python3 app.py [--config PATH]   (default: service.ini next to this file)

Configuration (INI):

    [server]
    bind = <address to listen on>      required
    port = <TCP port>                  required

    [content]
    root = <directory of static files> required, must exist
    greeting = <text for GET /greeting> optional, default "hello"

    [log]
    access_log = <file>                optional; one line per request is appended
                                       ("METHOD PATH STATUS"); its directory must exist

Endpoints: GET /health -> "ok"; GET /greeting -> the greeting; anything else is
served from the content root (/ serves index.html).
"""

import argparse
import configparser
import functools
import os
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Handler(SimpleHTTPRequestHandler):
    greeting = "hello"
    access_log = None

    def do_GET(self):
        if self.path == "/health":
            return self._text(200, "ok\n")
        if self.path == "/greeting":
            return self._text(200, self.greeting + "\n")
        return super().do_GET()

    def _text(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code="-", size="-"):
        if self.access_log:
            with open(self.access_log, "a") as fp:
                fp.write(f"{self.command} {self.path} {code}\n")

    def log_message(self, format, *args):
        sys.stderr.write("notes-service: " + (format % args) + "\n")


def load_config(path):
    if not os.path.exists(path):
        sys.exit(f"notes-service: config file {path} not found")
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(path)
    try:
        bind = cfg.get("server", "bind")
        port = cfg.getint("server", "port")
        root = cfg.get("content", "root")
    except (configparser.Error, ValueError) as exc:
        sys.exit(f"notes-service: bad config {path}: {exc}")
    if not os.path.isdir(root):
        sys.exit(f"notes-service: content root {root} is not a directory")
    greeting = cfg.get("content", "greeting", fallback="hello")
    access_log = cfg.get("log", "access_log", fallback=None)
    if access_log and not os.path.isdir(os.path.dirname(os.path.abspath(access_log))):
        sys.exit(f"notes-service: directory of access_log {access_log} does not exist")
    return bind, port, root, greeting, access_log


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--config", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "service.ini")
    )
    args = parser.parse_args()
    bind, port, root, greeting, access_log = load_config(args.config)
    Handler.greeting = greeting
    Handler.access_log = access_log
    server = ThreadingHTTPServer((bind, port), functools.partial(Handler, directory=root))
    print(f"notes-service: listening on {bind}:{port}, serving {root}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
