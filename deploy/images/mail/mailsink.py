"""SMTP sink on :1025 with a read-only JSON listing on :8025 (mailpit-like)."""

import email
import email.policy
import json
import signal
import threading
import uuid
from datetime import datetime, timezone
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

MAX_MESSAGES = 1000
_lock = threading.Lock()
_messages = []  # newest first, like mailpit


def _addresses(values):
    return [{"Name": name, "Address": addr} for name, addr in getaddresses(values)]


class Handler:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain", "html"))
        item = {
            "ID": uuid.uuid4().hex,
            "MessageID": (msg.get("Message-ID") or "").strip("<>"),
            "From": (_addresses(msg.get_all("From", [])) or [{"Name": "", "Address": ""}])[0],
            "To": _addresses(msg.get_all("To", [])),
            "Subject": msg.get("Subject", ""),
            "Created": datetime.now(timezone.utc).isoformat(),
            "Snippet": (body.get_content() if body is not None else "")[:250],
            "Size": len(envelope.content),
        }
        with _lock:
            _messages.insert(0, item)
            del _messages[MAX_MESSAGES:]
        return "250 Message accepted for delivery"


class Api(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?")[0] not in ("/api/v1/messages", "/livez", "/readyz"):
            self.send_error(404)
            return
        with _lock:
            count = len(_messages)
            payload = {"total": count, "count": count, "messages": list(_messages)}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass


def main():
    smtp = Controller(Handler(), hostname="0.0.0.0", port=1025)
    smtp.start()
    http = ThreadingHTTPServer(("0.0.0.0", 8025), Api)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=http.shutdown).start())
    print("mail sink: SMTP on :1025, messages on :8025/api/v1/messages", flush=True)
    try:
        http.serve_forever()
    finally:
        smtp.stop()


if __name__ == "__main__":
    main()
