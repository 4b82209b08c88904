"""``python -m pipeline serve``: an HTTP JSON endpoint that loads a checkpoint once and classifies.

    python -m pipeline serve --model smollm2 --train-dir runs/demo/train --checkpoint best --port 8000

The front end of the ``classify`` stage (the same stage unit: it reuses :class:`pipeline.classify.TrackClassifier`,
:func:`~pipeline.classify.load_tracks` and :func:`~pipeline.classify.classify_records`, and
:func:`pipeline.models.scoring.answer_rows` for ready prompts), on the standard library's ``ThreadingHTTPServer``:

* ``GET /health`` -> ``{"status": "ok", "model", "checkpoint", "mode", "render", ...}``;
* ``POST /classify`` with a JSON object holding exactly one of

  - ``tracks``: the text of a track file (what ``classify`` reads; ``format`` csv | jsonl, default csv; an NPZ as
    base64 with ``format: npz``), with ``units``, ``orbit``, ``id_column`` as in the classify config;
  - ``records``: track records (``data_prep.tracks.read_tracks`` output);
  - ``prompts``: ready prompt strings (a list), with ``lang`` (en | zh, default en);

  plus ``mode`` (score | generate; default the server's) and ``max_new_tokens`` (generate; at most the server's).
  Answer: ``{"mode", "rows": [...]}``, rows as the classify stage writes them (prompts: ``prompt``, ``output``,
  ``motion``/``operation``/``task``, ``probs`` in score mode).

Errors are JSON ``{"error": ..., "field": ...}`` with a 4xx status: 400 bad JSON, unknown or mistyped field, or a track
file error (its line and column named, as the classify stage reports them); 411 no Content-Length; 413 a body over
``--max-bytes`` or more than ``--max-items`` tracks/prompts; 404 / 405 other paths and methods. One request uses the
model at a time (a lock); others wait, ``/health`` answers meanwhile.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import logging
import sys
import tempfile
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipeline.classify import TrackClassifier, classify_records, load_tracks
from pipeline.core.config import ConfigError
from pipeline.core.io import DataError
from pipeline.core.taxonomy import LABELS, LEVELS

log = logging.getLogger(__name__)

#: request fields and the JSON types they take
FIELDS: dict[str, tuple[type, ...]] = {"tracks": (str,), "records": (list,), "prompts": (list,), "format": (str,),
                                       "units": (dict, str), "orbit": (str,), "id_column": (str,), "lang": (str,),
                                       "mode": (str,), "max_new_tokens": (int,)}
INPUTS = ("tracks", "records", "prompts")


class RequestError(Exception):
    """A client error: HTTP ``status``, a message and the request field it concerns."""

    def __init__(self, status: int, message: str, field: str | None = None, line: int | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.line = status, message, field, line

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message, "field": self.field}
        if self.line is not None:
            out["line"] = self.line
        return out


class Service:
    """The loaded classifier plus the server's limits; :meth:`answer` handles one parsed request body."""

    def __init__(self, clf: TrackClassifier, max_items: int = 64, max_new_tokens: int = 128):
        self.clf, self.max_items, self.max_new_tokens = clf, max_items, max_new_tokens
        self.lock = threading.Lock()
        clf.load()  # once, before the first request

    def answer(self, body: Any) -> dict[str, Any]:
        """Validate ``body`` and classify its tracks, records or prompts (RequestError on a client mistake)."""
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object", "body")
        for key, value in body.items():
            if key not in FIELDS:
                raise RequestError(400, f"unknown field {key!r}; known: {', '.join(FIELDS)}", key)
            if not isinstance(value, FIELDS[key]) or isinstance(value, bool):
                raise RequestError(400, f"must be {' or '.join(t.__name__ for t in FIELDS[key])}, "
                                        f"got {type(value).__name__}", key)
        given = [k for k in INPUTS if k in body]
        if len(given) != 1:
            raise RequestError(400, f"give exactly one of {', '.join(INPUTS)} (got {', '.join(given) or 'none'})",
                               "/".join(INPUTS))
        clf = self.request_classifier(body)
        if "prompts" in body:
            return {"mode": clf.mode, "rows": self.answer_prompts(clf, body["prompts"], body.get("lang", "en"))}
        records, source, track_ids = self.read_input(body)
        if len(records) > self.max_items:
            raise RequestError(413, f"{len(records)} tracks; this server takes at most {self.max_items} a request",
                               given[0])
        with self.lock:
            rows = classify_records(clf, records, source, track_ids)
        return {"mode": clf.mode, "rows": rows}

    def request_classifier(self, body: dict[str, Any]) -> TrackClassifier:
        """The loaded classifier with this request's mode and budget (a shallow copy: the model is shared)."""
        mode = body.get("mode", self.clf.mode)
        if mode not in ("score", "generate"):
            raise RequestError(400, f"must be score or generate, got {mode!r}", "mode")
        budget = body.get("max_new_tokens", self.clf.max_new_tokens)
        if not 1 <= budget <= self.max_new_tokens:
            raise RequestError(400, f"must be in 1..{self.max_new_tokens}, got {budget}", "max_new_tokens")
        clf = copy.copy(self.clf)
        clf.mode, clf.max_new_tokens = mode, budget
        return clf

    def read_input(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, list[str] | None]:
        """Records from ``tracks`` (a track file's text, read by the classify stage's reader) or ``records``."""
        try:
            if "records" in body:
                return load_tracks(body["records"])
            fmt = body.get("format", "csv")
            if fmt not in ("csv", "jsonl", "npz"):
                raise RequestError(400, f"must be csv, jsonl or npz, got {fmt!r}", "format")
            if len(body["tracks"]) == 0:
                raise RequestError(400, "empty track file", "tracks")
            with tempfile.TemporaryDirectory(prefix="serve-") as tmp:
                path = Path(tmp) / f"request.{fmt}"
                if fmt == "npz":
                    try:
                        path.write_bytes(base64.b64decode(body["tracks"], validate=True))
                    except ValueError:
                        raise RequestError(400, "an npz track file must be sent as base64", "tracks") from None
                else:
                    path.write_text(body["tracks"], encoding="utf-8")
                records, _, track_ids = load_tracks(path, fmt, body.get("units"), body.get("orbit"),
                                                    body.get("id_column", "track_id"))
                return records, "tracks", track_ids
        except DataError as exc:
            where = ("tracks" if "tracks" in body else "records") + (f".{exc.field}" if exc.field else "")
            message = str(exc).split(": ", 1)[-1] if exc.path in str(exc) else str(exc)
            raise RequestError(400, message, where, exc.line) from None

    def answer_prompts(self, clf: TrackClassifier, prompts: Sequence[Any], lang: str) -> list[dict[str, Any]]:
        """Ready prompts answered as the evaluate stage answers them (label scoring or a greedy reply)."""
        from pipeline.models.scoring import answer_rows

        if not prompts or len(prompts) > self.max_items:
            raise RequestError(413 if prompts else 400, f"{len(prompts)} prompts; give 1..{self.max_items}", "prompts")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise RequestError(400, "must be a non-empty string", f"prompts[{i}]")
        if lang not in ("en", "zh"):
            raise RequestError(400, f"must be en or zh, got {lang!r}", "lang")
        with self.lock:
            answers = answer_rows(clf.lm, clf.tokenizer, clf.mode, list(prompts), [lang] * len(prompts),
                                  clf.batch_size, clf.max_new_tokens)
        rows = []
        for prompt, ans in zip(prompts, answers, strict=True):
            row: dict[str, Any] = {"prompt": prompt, "mode": clf.mode, "output": ans["output"],
                                   **{level: ans["parsed"].get(level) for level in LEVELS}}
            if clf.mode == "score":
                row["probs"] = {level: {lab: ans["probs"][level][lab] for lab in LABELS[level]} for level in LEVELS}
            rows.append(row)
        return rows


def make_handler(service: Service, max_bytes: int) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``service`` (``max_bytes``: the largest body accepted)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "glm-pipeline"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
            log.info("%s %s", self.address_string(), format % args)

        def send_json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.rstrip("/") == "/health":
                self.send_json(200, {"status": "ok", **service.clf.describe()})
            else:
                self.send_json(404, {"error": f"no such endpoint {self.path}; use GET /health, POST /classify",
                                     "field": "path"})

        def do_POST(self) -> None:  # noqa: N802
            try:
                if self.path.rstrip("/") != "/classify":
                    raise RequestError(404, f"no such endpoint {self.path}; use POST /classify", "path")
                body = self.read_body()
                self.send_json(200, service.answer(body))
            except RequestError as exc:
                self.send_json(exc.status, exc.payload())

        def read_body(self) -> Any:
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise RequestError(411, "a Content-Length header is required", "Content-Length")
            if int(length) > max_bytes:
                self.close_connection = True  # the unread body must not be parsed as the next request
                raise RequestError(413, f"body of {length} bytes; this server takes at most {max_bytes}", "body")
            raw = self.rfile.read(int(length))
            try:
                return json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise RequestError(400, f"not valid UTF-8 JSON ({exc})", "body") from None

        def do_PUT(self) -> None:  # noqa: N802
            self.send_json(405, {"error": "use GET /health or POST /classify", "field": "method"})

        do_DELETE = do_PATCH = do_PUT  # noqa: N815

    return Handler


def make_server(service: Service, host: str = "127.0.0.1", port: int = 8000,
                max_bytes: int = 1_000_000) -> ThreadingHTTPServer:
    """A bound (not yet serving) server; ``port=0`` picks a free port (``server.server_address``)."""
    server = ThreadingHTTPServer((host, port), make_handler(service, max_bytes))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline serve ...``: load the checkpoint, serve until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m pipeline serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="model spec: smollm2 | tiny:<name> | local HF folder")
    parser.add_argument("--train-dir", help="train output folder (or a PEFT adapter folder with --checkpoint .); "
                                            "none = the base model")
    parser.add_argument("--checkpoint", default="best", help="checkpoint under --train-dir (best | final | ...)")
    parser.add_argument("--mode", choices=("score", "generate"), default="score", help="default answer mode")
    parser.add_argument("--render", default="{}", help="render overrides as JSON, e.g. '{\"prompt_type\": \"compact\"}'")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-bytes", type=int, default=1_000_000, help="largest request body")
    parser.add_argument("--max-items", type=int, default=64, help="most tracks or prompts per request")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="largest generation budget")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        render = json.loads(args.render)
        clf = TrackClassifier(args.model, args.train_dir, args.checkpoint, args.mode, render, args.batch_size,
                              args.max_new_tokens, args.dtype, args.device)
        service = Service(clf, args.max_items, args.max_new_tokens)
    except (ConfigError, DataError, ValueError) as exc:  # bad checkpoint, render JSON or option: exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = make_server(service, args.host, args.port, args.max_bytes)
    host, port = server.server_address[:2]
    print(f"serving {args.model} ({clf.describe()['checkpoint'] or 'base model'}) on http://{host}:{port} "
          "(GET /health, POST /classify)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


__all__ = ["RequestError", "Service", "main", "make_server"]
