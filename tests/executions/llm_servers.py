"""Real local HTTP servers speaking the OpenAI chat-completions and Anthropic Messages wire
protocols (SSE streaming included), for provider tests: the SDKs talk to them over TCP exactly
as they would to the real services.

A server follows a script of replies, one per request (then repeats the last): a reply is a
dict with `content`, `tool_calls` [{id, name, arguments}], `status` (answer with that HTTP
error instead), `delay` (seconds before the first byte), `chunk_delay`, or `hang` (never answer
until the client goes away — a slow model a worker can be killed in).
"""

from __future__ import annotations

import abc
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ScriptedServer(abc.ABC):
    flavor = "openai"

    def __init__(self, script: list[dict[str, Any]] | None = None, model: str = "") -> None:
        self.script = list(script or [{"content": "Hello from the server."}])
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.request_started = threading.Event()
        self.disconnects = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    index = len(server.requests)
                    server.requests.append(
                        {"path": self.path, "body": body, "headers": dict(self.headers)}
                    )
                    reply = server.script[min(index, len(server.script) - 1)]
                server.request_started.set()
                server.respond(self, body, reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- replies --------------------------------------------------------------------------

    def respond(self, handler: BaseHTTPRequestHandler, body: dict, reply: dict) -> None:
        if reply.get("delay"):
            time.sleep(reply["delay"])
        if reply.get("status"):
            self.error(handler, reply["status"], reply.get("message", "scripted failure"))
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        try:
            if reply.get("hang"):
                # Send a first chunk so the client is committed, then block until it hangs up.
                for frame in self.frames(body, {"content": ""})[:1]:
                    handler.wfile.write(frame)
                    handler.wfile.flush()
                while True:
                    time.sleep(0.2)
                    handler.wfile.write(b": still thinking\n\n")
                    handler.wfile.flush()
            for frame in self.frames(body, reply):
                handler.wfile.write(frame)
                handler.wfile.flush()
                if reply.get("chunk_delay"):
                    time.sleep(reply["chunk_delay"])
        except (BrokenPipeError, ConnectionResetError):
            self.disconnects += 1

    def error(self, handler: BaseHTTPRequestHandler, status: int, message: str) -> None:
        payload = json.dumps({"error": {"message": message, "type": "server_error"}}).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    @abc.abstractmethod
    def frames(self, body: dict, reply: dict) -> list[bytes]:
        """The provider's SSE frames for one reply (each subclass speaks one wire protocol)."""


def _words(text: str) -> list[str]:
    out, current = [], ""
    for ch in text:
        current += ch
        if ch == " ":
            out.append(current)
            current = ""
    if current:
        out.append(current)
    return out


class OpenAIServer(ScriptedServer):
    """POST /v1/chat/completions with stream=true."""

    def frames(self, body: dict, reply: dict) -> list[bytes]:
        model = self.model or body.get("model", "gpt-4o-mini")

        def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
            data: dict[str, Any] = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": model,
                "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if usage:
                data["usage"] = usage
            return f"data: {json.dumps(data)}\n\n".encode()

        frames = [chunk({"role": "assistant", "content": ""})]
        for word in _words(reply.get("content", "")):
            frames.append(chunk({"content": word}))
        for i, call in enumerate(reply.get("tool_calls") or []):
            raw = json.dumps(call.get("arguments") or {})
            half = len(raw) // 2
            frames.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": call.get("id", f"call_{i}"),
                                "type": "function",
                                "function": {"name": call["name"], "arguments": raw[:half]},
                            }
                        ]
                    }
                )
            )
            frames.append(
                chunk({"tool_calls": [{"index": i, "function": {"arguments": raw[half:]}}]})
            )
        finish = "tool_calls" if reply.get("tool_calls") else "stop"
        frames.append(chunk({}, finish))
        usage = reply.get("usage") or {
            "prompt_tokens": 11,
            "completion_tokens": 7,
            "total_tokens": 18,
        }
        frames.append(chunk({}, usage=usage))
        frames.append(b"data: [DONE]\n\n")
        return frames


class AnthropicServer(ScriptedServer):
    """POST /v1/messages with stream=true."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def frames(self, body: dict, reply: dict) -> list[bytes]:
        model = self.model or body.get("model", "claude-3-5-haiku-20241022")
        usage = reply.get("usage") or {"input_tokens": 12, "output_tokens": 9}

        def event(name: str, data: dict) -> bytes:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

        frames = [
            event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": "msg_test",
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1},
                    },
                },
            )
        ]
        index = 0
        if reply.get("thinking"):
            frames.append(
                event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                    },
                )
            )
            frames.append(
                event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "thinking_delta", "thinking": reply["thinking"]},
                    },
                )
            )
            frames.append(
                event("content_block_stop", {"type": "content_block_stop", "index": index})
            )
            index += 1
        if reply.get("content"):
            frames.append(
                event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            for word in _words(reply["content"]):
                frames.append(
                    event(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": word},
                        },
                    )
                )
            frames.append(
                event("content_block_stop", {"type": "content_block_stop", "index": index})
            )
            index += 1
        for call in reply.get("tool_calls") or []:
            frames.append(
                event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": call.get("id", f"toolu_{index}"),
                            "name": call["name"],
                            "input": {},
                        },
                    },
                )
            )
            raw = json.dumps(call.get("arguments") or {})
            for part in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                frames.append(
                    event(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": part},
                        },
                    )
                )
            frames.append(
                event("content_block_stop", {"type": "content_block_stop", "index": index})
            )
            index += 1
        stop = "tool_use" if reply.get("tool_calls") else "end_turn"
        frames.append(
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
        )
        frames.append(event("message_stop", {"type": "message_stop"}))
        return frames

    def error(self, handler: BaseHTTPRequestHandler, status: int, message: str) -> None:
        payload = json.dumps(
            {"type": "error", "error": {"type": "api_error", "message": message}}
        ).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
