"""A thin OpenAI-compatible server on a loopback port, for faults a real server cannot show on demand.

``mode``: ``"ok"`` streams a short completion; ``"503"`` answers 503; ``"cut"``
streams two chunks and drops the connection without the closing ``[DONE]``.
"""

import http.server
import json
import threading


class FakeOpenAI:
    def __init__(self, mode="ok"):
        self.mode = mode
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _json(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    self._json(200, {"data": [{"id": "fake", "max_model_len": 512}]})
                else:
                    self._json(404, {"message": "no such path"})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/tokenize":
                    self._json(200, {"tokens": [1, 2, 3], "count": 3})
                elif fake.mode == "503":
                    self._json(503, {"message": "the engine is overloaded"})
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    events = [{"choices": [{"text": "ab", "token_ids": [5]}]},
                              {"choices": [{"text": "cd", "token_ids": [6]}]}]
                    for event in events:
                        self._chunk(f"data: {json.dumps(event)}\n\n")
                    if fake.mode == "cut":
                        self.wfile.flush()
                        self.connection.shutdown(2)  # gone mid-stream, no [DONE], no last chunk
                        return
                    self._chunk('data: {"choices": [{"text": "", "token_ids": [2], "finish_reason": "stop"}], '
                                '"usage": {"prompt_tokens": 3, "completion_tokens": 3}}\n\n')
                    self._chunk("data: [DONE]\n\n")
                    self.wfile.write(b"0\r\n\r\n")

            def _chunk(self, text):
                data = text.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
