"""A local Label Studio for the labelling loop: install, start, push a batch, pull its annotations.

    python scripts/label_studio_server.py start [--port 8080] [--data-dir runs/label-studio]
    python scripts/label_studio_server.py push runs/demo/label/round1/export [--title "round 1"]
    python scripts/label_studio_server.py pull PROJECT_ID runs/demo/label/round1/label_studio
    python scripts/label_studio_server.py roundtrip EXPORT_DIR OUT_DIR      # scripted experts (tests)

* ``start`` installs ``label-studio`` (``LABEL_STUDIO_VERSION``, default 1.23.2) into its own venv
  (``LABEL_STUDIO_VENV``, default ``.cache/label-studio/venv``, git-ignored) when it is missing,
  creates the admin account on first use and runs the server (SQLite under ``--data-dir``) until
  Ctrl-C. Login, password and API token are printed and kept in ``<data-dir>/connection.json``,
  which ``push`` and ``pull`` read (or ``--url`` / ``--token``, or ``LABEL_STUDIO_URL`` /
  ``LABEL_STUDIO_API_KEY``; a personal access token from the UI works too).
* ``push`` creates a project from ``label.export``'s ``labeling_config.xml`` and imports its
  ``tasks.json`` (the model's pre-annotations included); it prints the project id and URL.
* ``pull`` writes ``export.json`` (what Export -> JSON in the UI gives) and ``users.json`` (the
  server's user list, so ``label import`` names reviewers by e-mail) into OUT_DIR.
* ``roundtrip`` is the integration run behind ``tests/test_label_studio_server.py``: a fresh server
  on a free port, two annotators, the project created from EXPORT_DIR, annotations written
  through the REST API the way the editor writes them (see :func:`editor_annotation`), then every
  export the server offers for our config saved into OUT_DIR. The server is stopped at the end.

Only the standard library is used, so this runs under the pipeline's own Python.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VERSION = os.environ.get("LABEL_STUDIO_VERSION", "1.23.2")
VENV = Path(os.environ.get("LABEL_STUDIO_VENV", ROOT / ".cache" / "label-studio" / "venv"))
#: keep the server off the network beyond this machine: no update check, no telemetry, no Sentry
QUIET_ENV = {"LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "",
             "FRONTEND_SENTRY_DSN": ""}
#: the export formats label import reads and the ones recorded to test its refusal
READ_FORMATS = ("JSON", "JSON_MIN")
REFUSED_FORMATS = ("CSV", "TSV")


def say(msg: str) -> None:
    """Progress on stderr (stdout stays for results)."""
    print(f"[label-studio] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- install
def label_studio_bin(venv: Path = VENV) -> Path:
    """The ``label-studio`` entry point inside ``venv``."""
    return Path(venv) / "bin" / "label-studio"


def ensure_installed(venv: Path = VENV, version: str = VERSION, timeout: float = 1800) -> Path:
    """Install ``label-studio==version`` into its own venv unless it is there; returns the entry point.

    Never touches the pipeline's environment. Probing uses pip metadata: ``label-studio --version``
    would start a server.
    """
    exe = label_studio_bin(venv)
    if exe.exists():
        probe = subprocess.run([str(Path(venv) / "bin" / "python"), "-c",
                                "import importlib.metadata as m; print(m.version('label-studio'))"],
                               capture_output=True, text=True, timeout=120)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return exe
        say(f"{venv} has label-studio {probe.stdout.strip() or '?'}; installing {version}")
    if not (Path(venv) / "bin" / "python").exists():
        say(f"creating venv {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=600)
    say(f"pip install label-studio=={version} into {venv} (a few minutes)")
    subprocess.run([str(Path(venv) / "bin" / "pip"), "install", "-q", f"label-studio=={version}"],
                   check=True, timeout=timeout)
    return exe


# ----------------------------------------------------------------------------------------- server
def free_port() -> int:
    """A TCP port nobody listens on right now (the server is then checked to be ours by token)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(data_dir: Path) -> dict[str, str]:
    """Environment of the Label Studio processes."""
    return {**os.environ, **QUIET_ENV, "LABEL_STUDIO_BASE_DATA_DIR": str(Path(data_dir).resolve())}


def create_user(exe: Path, data_dir: Path, email: str, password: str, token: str, timeout: float = 1200) -> None:
    """Create an account with a fixed legacy API token (``label-studio init``; the first one owns the org).

    The first call also creates the SQLite database (all migrations: minutes on a slow machine).
    ``--enable-legacy-api-token`` lets scripts use ``Authorization: Token <token>``.
    """
    cmd = [str(exe), "init", "-q", "--data-dir", str(data_dir), "--username", email, "--password", password,
           "--user-token", token, "--enable-legacy-api-token"]
    out = subprocess.run(cmd, env=server_env(data_dir), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"label-studio init for {email} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


@contextlib.contextmanager
def running_server(exe: Path, data_dir: Path, port: int, token: str, log_path: Path,
                   timeout: float = 900) -> Iterator[str]:
    """Run ``label-studio start`` on 127.0.0.1:``port``; yields the base URL; always stops the server.

    Waits for ``/health`` and then for the token to be accepted: Label Studio silently moves to
    another port when its port is taken, so only our token proves the server is ours.
    """
    url = f"http://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port",
                                 str(port), "--data-dir", str(data_dir), "--enable-legacy-api-token"],
                                env=server_env(data_dir), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            wait_until_up(url, token, proc, timeout, log_path)
            yield url
        finally:
            stop_process_group(proc)


def wait_until_up(url: str, token: str, proc: subprocess.Popen, timeout: float, log_path: Path) -> None:
    """Poll ``/health`` and ``whoami`` until both answer; a dead process or the timeout raises."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"label-studio exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
                if r.status == 200:
                    Client(url, token).get("/api/current-user/whoami")
                    say(f"up at {url} after {time.monotonic() - start:.0f} s")
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(2)
    raise TimeoutError(f"label-studio not up at {url} after {timeout:.0f} s; see {log_path}")


def stop_process_group(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the server's process group (it forks workers), SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace)


# ----------------------------------------------------------------------------------------- client
class Client:
    """The few REST calls the loop needs (``Authorization: Token``; a JWT personal access token is
    exchanged for an access token first)."""

    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/")
        if token.count(".") == 2:  # a personal access token (JWT refresh token) from the UI
            access = self.request("POST", "/api/token/refresh/", {"refresh": token}, auth="")["access"]
            self.auth = f"Bearer {access}"
        else:
            self.auth = f"Token {token}"

    def request(self, method: str, path: str, body: Any = None, raw: bool = False, auth: str | None = None,
                timeout: float = 300) -> Any:
        """One JSON call; HTTP errors raise with the server's answer."""
        headers = {"Content-Type": "application/json"}
        if (auth if auth is not None else self.auth):
            headers["Authorization"] = auth if auth is not None else self.auth
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                payload = r.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:1000].decode(errors='replace')}") \
                from None
        if raw:
            return payload
        return json.loads(payload) if payload else None

    def get(self, path: str, **kw: Any) -> Any:
        """GET ``path``."""
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Any:
        """POST ``body`` to ``path``."""
        return self.request("POST", path, body, **kw)

    def create_project(self, title: str, label_config: str) -> dict[str, Any]:
        """A new project; the server validates the labelling config."""
        return self.post("/api/projects/", {"title": title, "label_config": label_config})

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        """Import tasks (with their ``predictions``) into a project."""
        return self.post(f"/api/projects/{project}/import", tasks)

    def task_ids(self, project: int) -> list[int]:
        """Every task id of a project, in import order."""
        ids: list[int] = []
        page = 1
        while True:
            got = self.get(f"/api/tasks/?project={project}&page={page}&page_size=100&fields=task_only")
            ids += [t["id"] for t in got["tasks"]]
            if not got["tasks"] or len(ids) >= got["total"]:
                return sorted(ids)
            page += 1

    def task(self, task_id: int) -> dict[str, Any]:
        """One task with its predictions and annotations."""
        return self.get(f"/api/tasks/{task_id}/")

    def submit(self, task_id: int, project: int, body: dict[str, Any]) -> dict[str, Any]:
        """Create an annotation as the calling user (the editor's Submit / Skip call)."""
        return self.post(f"/api/tasks/{task_id}/annotations/?project={project}", body)

    def export(self, project: int, fmt: str) -> bytes:
        """Export -> ``fmt`` of the UI (``GET /api/projects/<id>/export?exportType=...``)."""
        return self.get(f"/api/projects/{project}/export?exportType={fmt}", raw=True)

    def snapshot(self, project: int, options: dict[str, Any], fmt: str = "JSON", timeout: float = 600) -> bytes:
        """A snapshot export with ``serialization_options``, downloaded as ``fmt``."""
        snap = self.post(f"/api/projects/{project}/exports/", {"title": "label import", "serialization_options": options})
        start = time.monotonic()
        while snap.get("status") not in ("completed", "failed"):
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"snapshot export {snap['id']} not done after {timeout} s")
            time.sleep(1)
            snap = self.get(f"/api/projects/{project}/exports/{snap['id']}")
        if snap["status"] != "completed":
            raise RuntimeError(f"snapshot export failed: {snap}")
        return self.get(f"/api/projects/{project}/exports/{snap['id']}/download?exportType={fmt}", raw=True)

    def users(self) -> list[dict[str, Any]]:
        """The organisation's users (ids, e-mails): what ``label import`` needs to name reviewers."""
        return self.get("/api/users/")


# ------------------------------------------------------------------------------------ the experts
def editor_annotation(prediction: dict[str, Any], edits: dict[str, Any], lead_time: float,
                      skip: bool = False) -> dict[str, Any]:
    """The body the Label Studio editor (1.23) POSTs when an expert submits or skips a pre-filled task.

    What the editor does (its ``AppStore``/``Regions``/``lsf-sdk`` code): a new annotation copies the
    prediction's regions with ``origin: "prediction"`` and links it by ``parent_prediction``;
    changing a choice or a text keeps the region and sets ``origin: "prediction-changed"``; a region
    the expert removes is simply absent; a newly typed region is ``origin: "manual"``; Skip posts
    the same body with ``was_cancelled: true``. ``edits`` maps a control name to a new value
    (``{"choices": [...]}`` / ``{"text": [...]}``), to None (remove the region) or to
    ``("manual", value)`` (remove it and type a new one).
    """
    result = [dict(copy.deepcopy(r), origin="prediction") for r in prediction["result"]]
    to_name = prediction["result"][0]["to_name"] if prediction["result"] else "text"

    def type_anew(name: str, value: dict[str, Any]) -> None:
        result.append({"id": secrets.token_hex(5), "from_name": name, "to_name": to_name,
                       "type": "textarea" if "text" in value else "choices", "value": value, "origin": "manual"})

    for name, new in edits.items():
        region = next((r for r in result if r["from_name"] == name), None)
        if new is None or isinstance(new, tuple):  # removed (and maybe typed anew)
            if region is not None:
                result.remove(region)
            if isinstance(new, tuple):
                type_anew(name, new[1])
        elif region is None:
            type_anew(name, new)
        else:
            region["value"] = new
            region["origin"] = "prediction-changed"
    body = {"lead_time": lead_time, "result": result, "draft_id": None, "parent_prediction": prediction["id"],
            "parent_annotation": None, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}
    if skip:
        body["was_cancelled"] = True
    return body


def other_label(level: str, current: str | None) -> str:
    """A label of ``level`` different from ``current`` (the first in taxonomy order)."""
    sys.path.insert(0, str(ROOT))
    from pipeline.core.taxonomy import LABELS

    return next(lab for lab in LABELS[level] if lab != current)


#: what the two experts do, task by task (tasks with a rationale take the roles that need one):
#:   accept | change:<level> | edit (rationale) | delete (rationale) | rewrite (delete, type anew) | skip
SCENARIO: tuple[tuple[str, str, bool], ...] = (
    # (first expert, second expert, needs a model rationale)
    ("accept", "accept", False),
    ("change:motion", "change:motion+edit", True),
    ("edit", "accept", True),
    ("delete", "change:task", True),
    ("skip", "change:operation", False),
    ("rewrite", "skip", True),
)


def plan_actions(prediction: dict[str, Any], action: str) -> tuple[dict[str, Any], bool]:
    """``(edits, skip)`` for :func:`editor_annotation` from one scenario action."""
    current = {r["from_name"]: r["value"] for r in prediction["result"]}
    edits: dict[str, Any] = {}
    skip = False
    for part in action.split("+"):
        if part == "accept":
            pass
        elif part == "skip":
            skip = True
        elif part.startswith("change:"):
            level = part.split(":", 1)[1]
            edits[level] = {"choices": [other_label(level, (current.get(level) or {}).get("choices", [None])[0])]}
        elif part == "edit":
            edits["rationale"] = {"text": ["Expert: " + " ".join(current["rationale"]["text"]) + " (checked)"]}
        elif part == "delete":
            edits["rationale"] = None
        elif part == "rewrite":
            edits["rationale"] = ("manual", {"text": ["Expert rationale written from scratch."]})
        else:
            raise ValueError(f"unknown scenario action {part!r}")
    return edits, skip


def annotate_like_experts(experts: list[Client], project: int) -> dict[str, Any]:
    """Play :data:`SCENARIO` with two experts; the last task of the project stays untouched.

    Returns ``{"roles": {task_id: [action, action]}, "untouched": [task ids]}``.
    """
    tasks = [experts[0].task(tid) for tid in experts[0].task_ids(project)]
    for t in tasks:  # a task without a pre-annotation is labelled from scratch
        t["predictions"] = t["predictions"] or [{"id": None, "result": []}]
    with_rationale = [t for t in tasks if any(r["from_name"] == "rationale" for r in t["predictions"][0]["result"])]
    without = [t for t in tasks if t not in with_rationale]
    roles: dict[int, list[str]] = {}
    for first, second, needs in SCENARIO:
        pool = with_rationale if needs or not without else without
        task = pool.pop(0)
        roles[task["id"]] = [first, second]
        prediction = task["predictions"][0]
        for i, (expert, action) in enumerate(zip(experts, (first, second))):
            edits, skip = plan_actions(prediction, action)
            expert.submit(task["id"], project, editor_annotation(prediction, edits, lead_time=5.0 + i, skip=skip))
    untouched = [t["id"] for t in with_rationale + without]
    return {"roles": {str(k): v for k, v in roles.items()}, "untouched": untouched}


# -------------------------------------------------------------------------------------- round trip
EXPERTS = (("alice@example.org", "alice-password-1"), ("bob@example.org", "bob-password-1"))


def save_exports(client: Client, project: int, out: Path) -> dict[str, str]:
    """Every export ``label import`` is tested against, written into ``out``; returns {kind: file name}."""
    files = {
        "JSON": "export_json.json", "JSON_MIN": "export_json_min.json", "CSV": "export.csv", "TSV": "export.tsv",
        "snapshot": "export_snapshot.json", "users": "users.json", "formats": "export_formats.json",
    }
    for fmt in (*READ_FORMATS, *REFUSED_FORMATS):
        (out / files[fmt]).write_bytes(client.export(project, fmt))
    (out / files["snapshot"]).write_bytes(client.snapshot(project, {
        "predictions": {"only_id": False}, "annotations__completed_by": {"only_id": False},
        "drafts": {"only_id": True}, "include_annotation_history": False}))
    (out / files["users"]).write_text(json.dumps(client.users(), indent=1) + "\n")
    (out / files["formats"]).write_text(json.dumps(client.get(f"/api/projects/{project}/export/formats"), indent=1)
                                        + "\n")
    return files


def roundtrip(export_dir: Path, out: Path, data_dir: Path | None = None, port: int | None = None) -> dict[str, Any]:
    """Fresh server -> project from ``export_dir`` -> two scripted experts -> every export into ``out``.

    Returns a summary (version, project, roles, files, timings).
    """
    t0 = time.monotonic()
    exe = ensure_installed()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir or out / "server")
    if data_dir.exists():
        shutil.rmtree(data_dir)
    tokens = [secrets.token_hex(20) for _ in EXPERTS]
    t_install = time.monotonic()
    for (email, password), token in zip(EXPERTS, tokens):
        create_user(exe, data_dir, email, password, token)
    t_users = time.monotonic()
    port = port or free_port()
    with running_server(exe, data_dir, port, tokens[0], data_dir / "server.log") as url:
        t_up = time.monotonic()
        experts = [Client(url, tok) for tok in tokens]
        xml = (export_dir / "labeling_config.xml").read_text(encoding="utf-8")
        tasks = json.loads((export_dir / "tasks.json").read_text(encoding="utf-8"))
        project = experts[0].create_project("labelling loop round trip", xml)["id"]
        imported = experts[0].import_tasks(project, tasks)
        plan = annotate_like_experts(experts, project)
        files = save_exports(experts[0], project, out)
        version = experts[0].get("/api/version").get("release")
    for name in ("tasks.json", "tasks.jsonl", "labeling_config.xml"):
        shutil.copy2(export_dir / name, out / name)
    summary = {"label_studio": version, "project": project, "imported": imported, **plan, "files": files,
               "seconds": {"install_check": round(t_install - t0, 1), "create_users": round(t_users - t_install, 1),
                           "start": round(t_up - t_users, 1), "total": round(time.monotonic() - t0, 1)}}
    (out / "roundtrip.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


# -------------------------------------------------------------------------------------- user CLI
def connection(args: argparse.Namespace) -> Client:
    """A client from --url/--token, the environment, or ``<data-dir>/connection.json`` written by ``start``."""
    conn_file = Path(args.data_dir) / "connection.json"
    saved = json.loads(conn_file.read_text()) if conn_file.exists() else {}
    url = args.url or os.environ.get("LABEL_STUDIO_URL") or saved.get("url")
    token = args.token or os.environ.get("LABEL_STUDIO_API_KEY") or saved.get("token")
    if not url or not token:
        raise SystemExit(f"no server: run `start` first ({conn_file}) or give --url and --token")
    return Client(url, token)


def cmd_start(args: argparse.Namespace) -> int:
    """Install if needed, create the admin on first use, run the server until Ctrl-C."""
    exe = ensure_installed()
    data_dir = Path(args.data_dir)
    conn_file = data_dir / "connection.json"
    conn = json.loads(conn_file.read_text()) if conn_file.exists() else {}
    if not conn:
        conn = {"email": args.email, "password": secrets.token_urlsafe(9), "token": secrets.token_hex(20)}
        say(f"first start: creating the database and {args.email} (takes a few minutes)")
        create_user(exe, data_dir, conn["email"], conn["password"], conn["token"])
    conn["url"] = f"http://localhost:{args.port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    conn_file.write_text(json.dumps(conn, indent=1) + "\n")
    conn_file.chmod(0o600)
    with running_server(exe, data_dir, args.port, conn["token"], data_dir / "server.log") as url:
        print(f"Label Studio {VERSION} at {conn['url']}  login {conn['email']} / {conn['password']}  "
              f"API token {conn['token']}\nexperts sign up at {conn['url']}/user/signup/ ; Ctrl-C stops the server",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    """Create a project from label.export's output and import its tasks."""
    client = connection(args)
    export_dir = Path(args.export_dir)
    xml = (export_dir / "labeling_config.xml").read_text(encoding="utf-8")
    tasks = json.loads((export_dir / "tasks.json").read_text(encoding="utf-8"))
    project = client.create_project(args.title or f"labelling {export_dir.parent.name}", xml)
    imported = client.import_tasks(project["id"], tasks)
    print(json.dumps({"project": project["id"], "url": f"{client.url}/projects/{project['id']}/data",
                      "tasks": imported.get("task_count"), "predictions": imported.get("prediction_count")}))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Write export.json (Export -> JSON, or JSON_MIN / a full snapshot) and users.json into OUT_DIR."""
    client = connection(args)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.format == "snapshot":
        data = client.snapshot(args.project, {"predictions": {"only_id": False},
                                              "annotations__completed_by": {"only_id": False}})
    else:
        data = client.export(args.project, args.format)
    (out / "export.json").write_bytes(data)
    (out / "users.json").write_text(json.dumps(client.users(), indent=1) + "\n")
    print(json.dumps({"export": str(out / "export.json"), "users": str(out / "users.json"), "format": args.format}))
    return 0


def cmd_roundtrip(args: argparse.Namespace) -> int:
    """The scripted integration run."""
    summary = roundtrip(Path(args.export_dir), Path(args.out_dir), port=args.port)
    print(json.dumps(summary, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default="runs/label-studio", help="server data (SQLite, connection.json)")
    remote = argparse.ArgumentParser(add_help=False, parents=[common])
    remote.add_argument("--url", help="server URL (default: from start's connection.json)")
    remote.add_argument("--token", help="API token: legacy token or personal access token")
    p = sub.add_parser("start", parents=[common], help="install if needed and run a local server")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--email", default="admin@example.org", help="admin login created on first start")
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("push", parents=[remote], help="project from label.export's output")
    p.add_argument("export_dir")
    p.add_argument("--title")
    p.set_defaults(func=cmd_push)
    p = sub.add_parser("pull", parents=[remote], help="export.json + users.json of a project")
    p.add_argument("project", type=int)
    p.add_argument("out_dir")
    p.add_argument("--format", default="JSON", choices=["JSON", "JSON_MIN", "snapshot"])
    p.set_defaults(func=cmd_pull)
    p = sub.add_parser("roundtrip", help="fresh server + scripted experts; saves every export")
    p.add_argument("export_dir")
    p.add_argument("out_dir")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_roundtrip)
    args = parser.parse_args(argv)
    # a SIGTERM (timeout, kill PID) must still run the `finally` that stops the server
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
