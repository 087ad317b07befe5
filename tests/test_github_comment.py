"""``memguard comment`` against a fake GitHub REST API on loopback (http.server in a thread).

The fake behaves like the parts of the API the command uses: paginated issue
comments (``per_page``, ``Link: rel="next"``), create, update, the pull-request
lookup by head, bearer-token checks, and error answers on demand. Every CLI run
goes through :func:`run_memguard`, which asserts the token never reaches stdout
or stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pytest_memguard import github
from pytest_memguard.cli import main

TOKEN = "ghs_Secret0TokenValue1ForTests2xyz"
REPO = "octo/widgets"
PR = 7
MARKER = "<!-- pytest-memguard:comment -->"
OTHER_USER = {"login": "someone", "type": "User"}
BOT_USER = {"login": "github-actions[bot]", "type": "Bot"}


# --- the fake API -----------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Canned:
    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)


class FakeGitHub:
    """In-memory issues, comments and pulls for one repository, served under ``prefix``."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.comments: dict[int, list[dict[str, Any]]] = {PR: [], 8: []}
        self.pulls: list[dict[str, Any]] = []
        self.requests: list[Recorded] = []
        self.canned: dict[str, Canned] = {}  # method ("*" for any) -> the answer to give instead
        self.next_link_host: str | None = None  # serve rel="next" links on another host
        self._next_id = 1000
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        # A short poll interval: shutdown() waits for it, and the default 0.5 s would slow every test.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)

    @property
    def origin(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.origin + self.prefix

    def add_comment(self, number: int, body: str, user: dict[str, str] = OTHER_USER) -> dict[str, Any]:
        with self._lock:
            self._next_id += 1
            comment = {
                "id": self._next_id,
                "body": body,
                "user": user,
                "html_url": f"https://github.com/{REPO}/pull/{number}#issuecomment-{self._next_id}",
            }
            self.comments[number].append(comment)
            return comment

    def ours(self, number: int = PR, marker: str = MARKER) -> list[dict[str, Any]]:
        return [c for c in self.comments[number] if c["body"].split("\n", 1)[0] == marker]

    def calls(self, method: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if method is None or r.method == method]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                fake._serve(self, "GET")

            def do_POST(self) -> None:
                fake._serve(self, "POST")

            def do_PATCH(self) -> None:
                fake._serve(self, "PATCH")

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append(Recorded(method, url.path, query, dict(handler.headers.items()), body))
        answer = self._answer(method, url.path, query, dict(handler.headers.items()), body)
        data = json.dumps(answer.payload).encode()
        handler.send_response(answer.status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _answer(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any) -> Canned:
        canned = self.canned.get(method) or self.canned.get("*")
        if canned is not None:
            return canned
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            return Canned(401, {"message": "Bad credentials"})
        not_found = Canned(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        if not path.startswith(self.prefix + f"/repos/{REPO}/"):
            return not_found
        parts = path[len(self.prefix + f"/repos/{REPO}/") :].split("/")
        if parts == ["pulls"] and method == "GET":
            return Canned(200, [p for p in self.pulls if p["head"]["label"] == query.get("head")])
        if len(parts) == 3 and parts[0] == "issues" and parts[2] == "comments" and parts[1].isdigit():
            number = int(parts[1])
            if number not in self.comments:
                return not_found
            if method == "GET":
                return self._page(path, number, query)
            if method == "POST":
                comment = self.add_comment(number, body["body"], BOT_USER)
                return Canned(201, comment)
        if len(parts) == 3 and parts[:2] == ["issues", "comments"] and method == "PATCH":
            for comments in self.comments.values():
                for comment in comments:
                    if str(comment["id"]) == parts[2]:
                        comment["body"] = body["body"]
                        return Canned(200, comment)
        return not_found

    def _page(self, path: str, number: int, query: dict[str, str]) -> Canned:
        per_page = min(int(query.get("per_page", 30)), 100)  # GitHub's default page is 30
        page = int(query.get("page", 1))
        comments = self.comments[number]
        chunk = comments[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(comments):
            origin = self.next_link_host or self.origin
            last = (len(comments) + per_page - 1) // per_page
            headers["Link"] = (
                f'<{origin}{path}?per_page={per_page}&page={page + 1}>; rel="next", '
                f'<{origin}{path}?per_page={per_page}&page={last}>; rel="last"'
            )
        return Canned(200, chunk, headers)


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    server = FakeGitHub()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Actions variables from the machine running the tests, and no proxy in front of loopback."""
    for name in (
        "GITHUB_TOKEN",
        "GITHUB_REPOSITORY",
        "GITHUB_EVENT_PATH",
        "GITHUB_EVENT_NAME",
        "GITHUB_API_URL",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "memguard.md"
    path.write_text("## pytest-memguard\n\n| test | peak |\n| --- | --- |\n| test_a | 12.0 MiB |\n", encoding="utf-8")
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_memguard(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    code = main(list(args))
    captured = capsys.readouterr()
    assert TOKEN not in captured.out
    assert TOKEN not in captured.err
    return Result(code, captured.out, captured.err)


def comment_args(fake: FakeGitHub, report: Path, *extra: str) -> list[str]:
    return ["comment", "--markdown", str(report), "--repo", REPO, "--pr", str(PR), "--api-url", fake.api_url, *extra]


def write_event(tmp_path: Path, payload: dict[str, Any]) -> str:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    return str(path)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- create, update, find ---------------------------------------------------------------------


def test_first_run_creates_the_comment_and_the_next_run_edits_it(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    fake.add_comment(PR, "LGTM")

    first = run_memguard(capsys, *comment_args(fake, report))
    assert first.code == 0, first.err
    assert "created the comment on pull request #7 in octo/widgets: https://github.com/" in first.out
    [ours] = fake.ours()
    assert ours["body"] == MARKER + "\n\n" + report.read_text().strip("\n")
    post = fake.calls("POST")[0]
    assert post.path == f"/repos/{REPO}/issues/{PR}/comments"
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    assert post.headers["Accept"] == "application/vnd.github+json"
    assert post.headers["User-Agent"].startswith("pytest-memguard/")

    report.write_text("## pytest-memguard\n\nnow 3 tests\n", encoding="utf-8")
    second = run_memguard(capsys, *comment_args(fake, report))
    assert second.code == 0, second.err
    assert f"updated the comment on pull request #7 in octo/widgets: {ours['html_url']}" in second.out
    assert fake.ours() == [ours]  # the same comment object, edited
    assert ours["body"] == MARKER + "\n\n## pytest-memguard\n\nnow 3 tests"
    assert len(fake.calls("POST")) == 1
    [patch] = fake.calls("PATCH")
    assert patch.path == f"/repos/{REPO}/issues/comments/{ours['id']}"
    assert fake.comments[PR][0]["body"] == "LGTM"  # someone else's comment untouched


def test_unchanged_report_sends_no_edit(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    assert run_memguard(capsys, *comment_args(fake, report)).code == 0
    again = run_memguard(capsys, *comment_args(fake, report))
    assert again.code == 0
    assert "the comment on pull request #7 in octo/widgets is already up to date" in again.out
    assert fake.calls("PATCH") == []
    assert len(fake.ours()) == 1


def test_finds_the_marker_on_the_second_page(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    for i in range(130):
        fake.add_comment(PR, f"review comment {i}")
    ours = fake.add_comment(PR, MARKER + "\n\nold report", BOT_USER)  # the 131st: on page 2 of 100
    for i in range(5):
        fake.add_comment(PR, f"later comment {i}")

    result = run_memguard(capsys, *comment_args(fake, report))

    assert result.code == 0, result.err
    pages = [(r.query.get("per_page"), r.query.get("page", "1")) for r in fake.calls("GET")]
    assert pages == [("100", "1"), ("100", "2")]
    assert fake.calls("POST") == []
    assert [r.path for r in fake.calls("PATCH")] == [f"/repos/{REPO}/issues/comments/{ours['id']}"]
    assert ours["body"].startswith(MARKER + "\n\n## pytest-memguard")
    assert len(fake.comments[PR]) == 136


def test_stops_paging_once_the_comment_is_found(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    fake.add_comment(PR, MARKER + "\n\nold report", BOT_USER)
    for i in range(250):
        fake.add_comment(PR, f"comment {i}")
    assert run_memguard(capsys, *comment_args(fake, report)).code == 0
    assert len(fake.calls("GET")) == 1
    assert len(fake.calls("PATCH")) == 1


def test_comments_that_merely_contain_the_marker_are_not_ours(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    decoys = [
        fake.add_comment(PR, f"Why does the bot add {MARKER} to its comments?"),
        fake.add_comment(PR, f"> {MARKER}\n> quoted report"),
        fake.add_comment(PR, f" {MARKER}\nleading space"),
        fake.add_comment(PR, f"{MARKER} same line\nreport"),
        fake.add_comment(PR, "<!-- pytest-memguard:comment:other -->\nanother job's report"),
    ]
    before = [d["body"] for d in decoys]

    result = run_memguard(capsys, *comment_args(fake, report))

    assert result.code == 0, result.err
    assert "created" in result.out
    assert len(fake.calls("POST")) == 1
    assert fake.calls("PATCH") == []
    assert [d["body"] for d in decoys] == before


def test_report_quoting_the_marker_cannot_forge_it(
    fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    tricky = tmp_path / "tricky.md"
    tricky.write_text(f"--> {MARKER}\n<!-- pytest-memguard:comment:x -->\nbody\n", encoding="utf-8")
    assert run_memguard(capsys, *comment_args(fake, tricky)).code == 0
    assert run_memguard(capsys, *comment_args(fake, tricky, "--marker-id", "x")).code == 0

    [plain] = fake.ours()
    [with_id] = fake.ours(marker="<!-- pytest-memguard:comment:x -->")
    assert plain is not with_id
    assert plain["body"].split("\n")[0] == MARKER
    assert with_id["body"].split("\n")[0] == "<!-- pytest-memguard:comment:x -->"
    assert len(fake.comments[PR]) == 2


def test_marker_ids_keep_matrix_reports_apart(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    for marker_id in ("py3.9-linux", "py3.13-linux"):
        result = run_memguard(capsys, *comment_args(fake, report, "--marker-id", marker_id))
        assert result.code == 0, result.err
    assert run_memguard(capsys, *comment_args(fake, report)).code == 0
    assert len(fake.comments[PR]) == 3

    report.write_text("only the 3.9 job changed\n", encoding="utf-8")
    assert run_memguard(capsys, *comment_args(fake, report, "--marker-id", "py3.9-linux")).code == 0

    bodies = {c["body"].split("\n")[0]: c["body"] for c in fake.comments[PR]}
    assert bodies["<!-- pytest-memguard:comment:py3.9-linux -->"].endswith("only the 3.9 job changed")
    assert bodies["<!-- pytest-memguard:comment:py3.13-linux -->"].endswith("| test_a | 12.0 MiB |")
    assert bodies[MARKER].endswith("| test_a | 12.0 MiB |")
    assert len(fake.calls("PATCH")) == 1


@pytest.mark.parametrize("bad", ["a -->", "x y", "-leading-dash", "", "é"])
def test_marker_id_that_could_break_the_marker_is_refused(
    report: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_memguard(
        capsys, "comment", "--markdown", str(report), "--repo", REPO, "--pr", "1", f"--marker-id={bad}"
    )
    assert result.code == 2
    assert "invalid marker id" in result.err


# --- where to comment: the Actions environment ----------------------------------------------------


def test_repo_and_pr_from_a_pull_request_event(
    fake: FakeGitHub, report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("GITHUB_API_URL", fake.api_url)
    monkeypatch.setenv(
        "GITHUB_EVENT_PATH", write_event(tmp_path, {"action": "synchronize", "pull_request": {"number": 8}})
    )

    result = run_memguard(capsys, "comment", "--markdown", str(report))

    assert result.code == 0, result.err
    assert [r.path for r in fake.calls("POST")] == [f"/repos/{REPO}/issues/8/comments"]
    assert len(fake.ours(8)) == 1


def test_pr_from_a_workflow_run_event(
    fake: FakeGitHub, report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("GITHUB_API_URL", fake.api_url)
    payload = {"workflow_run": {"event": "pull_request", "pull_requests": [{"number": 8}], "head_sha": "abc"}}
    monkeypatch.setenv("GITHUB_EVENT_PATH", write_event(tmp_path, payload))

    result = run_memguard(capsys, "comment", "--markdown", str(report))

    assert result.code == 0, result.err
    assert [r.path for r in fake.calls("POST")] == [f"/repos/{REPO}/issues/8/comments"]


def test_workflow_run_picks_the_pull_request_into_this_repository(
    fake: FakeGitHub, report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GitHub also lists pull requests into other repositories that share the head branch.
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    pulls = [
        {"number": 99, "base": {"repo": {"url": "https://api.github.com/repos/upstream/widgets"}}},
        {"number": 8, "base": {"repo": {"url": f"https://api.github.com/repos/{REPO}"}}},
    ]
    payload = {"workflow_run": {"event": "pull_request", "pull_requests": pulls}}
    monkeypatch.setenv("GITHUB_EVENT_PATH", write_event(tmp_path, payload))

    result = run_memguard(capsys, "comment", "--markdown", str(report), "--api-url", fake.api_url)

    assert result.code == 0, result.err
    assert [r.path for r in fake.calls("POST")] == [f"/repos/{REPO}/issues/8/comments"]


def test_workflow_run_of_a_fork_pr_looks_the_pr_up_by_head(
    fake: FakeGitHub, report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GitHub leaves workflow_run.pull_requests empty when the pull request comes from a fork.
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("GITHUB_API_URL", fake.api_url)
    fake.pulls = [{"number": PR, "head": {"label": "forker:feature", "sha": "f00d"}}]
    payload = {
        "workflow_run": {
            "event": "pull_request",
            "pull_requests": [],
            "head_branch": "feature",
            "head_sha": "f00d",
            "head_repository": {"full_name": "forker/widgets", "owner": {"login": "forker"}},
        }
    }
    monkeypatch.setenv("GITHUB_EVENT_PATH", write_event(tmp_path, payload))

    result = run_memguard(capsys, "comment", "--markdown", str(report))

    assert result.code == 0, result.err
    lookup = fake.calls("GET")[0]
    assert lookup.path == f"/repos/{REPO}/pulls"
    assert lookup.query["head"] == "forker:feature"
    assert lookup.query["state"] == "open"
    assert len(fake.ours(PR)) == 1


def test_workflow_run_of_a_fork_pr_that_was_closed_meanwhile(
    fake: FakeGitHub, report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    payload = {
        "workflow_run": {
            "event": "pull_request",
            "pull_requests": [],
            "head_branch": "gone",
            "head_sha": "f00d",
            "head_repository": {"owner": {"login": "forker"}},
        }
    }
    monkeypatch.setenv("GITHUB_EVENT_PATH", write_event(tmp_path, payload))

    result = run_memguard(capsys, "comment", "--markdown", str(report), "--api-url", fake.api_url)

    assert result.code == 1
    assert "looking up the open pull request from forker:gone in octo/widgets: there is none" in result.err
    assert fake.calls("POST") == []


def test_pr_from_an_issue_comment_event(
    fake: FakeGitHub, report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("GITHUB_EVENT_PATH", write_event(tmp_path, {"issue": {"number": 8}, "comment": {"id": 1}}))

    result = run_memguard(capsys, "comment", "--markdown", str(report), "--api-url", fake.api_url)

    assert result.code == 0, result.err
    assert len(fake.ours(8)) == 1


def test_workflow_run_of_a_push_has_no_pull_request(
    report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    payload = {"workflow_run": {"event": "push", "pull_requests": []}}
    monkeypatch.setenv("GITHUB_EVENT_PATH", write_event(tmp_path, payload))

    result = run_memguard(capsys, "comment", "--markdown", str(report))

    assert result.code == 2
    assert "triggered by a 'push' event, not by a pull request" in result.err
    assert "--pr N" in result.err


def test_flags_win_over_the_environment(
    fake: FakeGitHub, report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", "someone/else")
    monkeypatch.setenv("GITHUB_API_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("GITHUB_EVENT_PATH", write_event(tmp_path, {"pull_request": {"number": 8}}))

    assert run_memguard(capsys, *comment_args(fake, report)).code == 0
    assert [r.path for r in fake.calls("POST")] == [f"/repos/{REPO}/issues/{PR}/comments"]


def test_github_enterprise_api_url_is_respected(
    report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    enterprise = FakeGitHub(prefix="/api/v3")
    enterprise.thread.start()
    try:
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        monkeypatch.setenv("GITHUB_API_URL", enterprise.api_url + "/")
        result = run_memguard(capsys, "comment", "--markdown", str(report), "--repo", REPO, "--pr", str(PR))
    finally:
        enterprise.server.shutdown()
        enterprise.server.server_close()
    assert result.code == 0, result.err
    assert [r.path for r in enterprise.requests] == [
        f"/api/v3/repos/{REPO}/issues/{PR}/comments",
        f"/api/v3/repos/{REPO}/issues/{PR}/comments",
    ]
    assert len(enterprise.ours()) == 1


# --- usage and configuration errors: exit 2 -------------------------------------------------------


def test_missing_token_is_a_usage_error(fake: FakeGitHub, report: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_memguard(capsys, *comment_args(fake, report))
    assert result.code == 2
    assert "usage: memguard comment" in result.err
    assert "memguard comment: error: GITHUB_TOKEN is not set" in result.err
    assert "secrets.GITHUB_TOKEN" in result.err
    assert fake.requests == []


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({}, ["--pr", "7"], "no repository: pass --repo OWNER/NAME"),
        ({"GITHUB_REPOSITORY": "not-a-repo"}, ["--pr", "7"], "invalid repository 'not-a-repo'"),
        ({}, ["--repo", "a/b/c", "--pr", "7"], "invalid repository 'a/b/c'"),
        ({}, ["--repo", REPO], "no pull request number: pass --pr N"),
        ({}, ["--repo", REPO, "--pr", "0"], "invalid pull request number '0'"),
        ({}, ["--repo", REPO, "--pr", "7", "--api-url", "ftp://example.com"], "invalid GitHub API URL"),
        # the token would travel in clear; http:// only to this machine (the tests' stand-in API)
        ({}, ["--repo", REPO, "--pr", "7", "--api-url", "http://github.example.com/api/v3"], "invalid GitHub API URL"),
        ({}, ["--repo", "../x", "--pr", "7"], "invalid repository '../x'"),
        ({}, ["--repo", "a/..", "--pr", "7"], "invalid repository 'a/..'"),
        ({"GITHUB_EVENT_PATH": "/nonexistent/event.json"}, ["--repo", REPO], "cannot read the event payload"),
    ],
)
def test_configuration_errors_exit_2(
    report: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    args: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run_memguard(capsys, "comment", "--markdown", str(report), *args)
    assert result.code == 2
    assert message in result.err


def test_event_without_a_pull_request_exits_2(
    report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_EVENT_PATH", write_event(tmp_path, {"ref": "refs/heads/main", "commits": []}))
    result = run_memguard(capsys, "comment", "--markdown", str(report), "--repo", REPO)
    assert result.code == 2
    assert "the event payload names no pull request" in result.err


def test_unreadable_or_empty_markdown_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = run_memguard(capsys, "comment", "--markdown", str(tmp_path / "nope.md"), "--repo", REPO, "--pr", "1")
    assert missing.code == 2
    assert "cannot read --markdown" in missing.err
    assert "No such file or directory" in missing.err

    empty = tmp_path / "empty.md"
    empty.write_text("\n\n", encoding="utf-8")
    result = run_memguard(capsys, "comment", "--markdown", str(empty), "--repo", REPO, "--pr", "1")
    assert result.code == 2
    assert "is empty: nothing to post" in result.err


# --- API failures: exit 1, with a message a person can act on --------------------------------------


def test_forbidden_on_a_fork_pull_request_explains_workflow_run(
    fake: FakeGitHub, report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("GITHUB_EVENT_NAME", "pull_request")
    payload = {
        "pull_request": {
            "number": PR,
            "head": {"repo": {"full_name": "forker/widgets"}},
            "base": {"repo": {"full_name": REPO}},
        }
    }
    monkeypatch.setenv("GITHUB_EVENT_PATH", write_event(tmp_path, payload))
    fake.canned["POST"] = Canned(403, {"message": "Resource not accessible by integration"})

    result = run_memguard(capsys, "comment", "--markdown", str(report), "--api-url", fake.api_url)

    assert result.code == 1
    assert "answered 403 (Resource not accessible by integration)" in result.err
    assert "`workflow_run`" in result.err
    assert "pull-requests: write" in result.err
    assert "comes from the fork forker/widgets" in result.err


def test_forbidden_without_a_fork_still_names_the_fixes(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    fake.canned["*"] = Canned(403, {"message": "Resource not accessible by integration"})
    result = run_memguard(capsys, *comment_args(fake, report))
    assert result.code == 1
    assert "memguard comment: error: listing the comments of pull request #7 in octo/widgets" in result.err
    assert "pull-requests: write" in result.err
    assert "workflow_run" in result.err
    assert "comes from the fork" not in result.err


def test_not_found(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    args = comment_args(fake, report)
    args[args.index("--pr") + 1] = "404"
    result = run_memguard(capsys, *args)
    assert result.code == 1
    assert f"GET /repos/{REPO}/issues/404/comments answered 404 (Not Found)" in result.err
    assert "does not exist, or the token cannot see it" in result.err


def test_bad_credentials(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_WrongTokenValue")
    result = main(comment_args(fake, report))
    err = capsys.readouterr().err
    assert result == 1
    assert "answered 401 (Bad credentials)" in err
    assert "GITHUB_TOKEN is wrong, expired or revoked" in err
    assert "ghs_WrongTokenValue" not in err


def test_rate_limit_says_when_it_resets(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    reset = int(time.time()) + 600
    fake.canned["GET"] = Canned(
        403,
        {"message": "API rate limit exceeded for installation ID 1."},
        {"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
    )
    result = run_memguard(capsys, *comment_args(fake, report))
    stamp = dt.datetime.fromtimestamp(reset, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert result.code == 1
    assert "rate limit is exhausted" in result.err
    assert f"It resets at {stamp} (in 9 min" in result.err or f"It resets at {stamp} (in 10 min" in result.err


def test_rate_limit_with_retry_after(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    fake.canned["POST"] = Canned(429, {"message": "You have exceeded a secondary rate limit."}, {"Retry-After": "45"})
    result = run_memguard(capsys, *comment_args(fake, report))
    assert result.code == 1
    assert "creating a comment on pull request #7" in result.err
    assert "rate limit is exhausted: POST" in result.err
    assert "(in 45 s); run again after that" in result.err


def test_server_error(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    fake.canned["PATCH"] = Canned(502, {"message": "Server Error"})
    fake.add_comment(PR, MARKER + "\n\nold", BOT_USER)
    result = run_memguard(capsys, *comment_args(fake, report))
    assert result.code == 1
    assert "updating comment" in result.err
    assert "answered 502 (Server Error): a GitHub server error, usually temporary" in result.err


def test_comment_deleted_between_finding_and_editing(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    fake.add_comment(PR, MARKER + "\n\nold", BOT_USER)
    fake.canned["PATCH"] = Canned(404, {"message": "Not Found"})
    result = run_memguard(capsys, *comment_args(fake, report))
    assert result.code == 1
    assert "the comment is gone (deleted since it was found?): run again to post a new one" in result.err


def test_validation_error_shows_githubs_details(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    fake.canned["POST"] = Canned(
        422,
        {
            "message": "Validation Failed",
            "errors": [{"resource": "IssueComment", "code": "custom", "message": "body is too long"}],
        },
    )
    result = run_memguard(capsys, *comment_args(fake, report))
    assert result.code == 1
    assert "answered 422 (Validation Failed; body is too long)" in result.err


def test_connection_refused(report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    api = f"http://127.0.0.1:{closed_port()}"
    result = run_memguard(capsys, "comment", "--markdown", str(report), "--repo", REPO, "--pr", "7", "--api-url", api)
    assert result.code == 1
    assert f"cannot reach the GitHub API at {api} (Connection refused)" in result.err


def test_token_echoed_by_the_server_is_redacted(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    fake.canned["*"] = Canned(400, {"message": f"malformed header: Bearer {TOKEN}"})
    result = run_memguard(capsys, *comment_args(fake, report))  # asserts the token is absent
    assert result.code == 1
    assert "answered 400 (malformed header: Bearer ***)" in result.err


def test_pagination_link_to_another_host_is_not_followed(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    for i in range(150):
        fake.add_comment(PR, f"comment {i}")
    fake.next_link_host = f"http://localhost:{fake.server.server_address[1]}"  # same server, another origin
    result = run_memguard(capsys, *comment_args(fake, report))
    assert result.code == 1
    assert "the next page is on another host" in result.err
    assert len(fake.requests) == 1


def test_redirect_to_another_host_is_not_followed(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    elsewhere = f"http://localhost:{fake.server.server_address[1]}/repos/{REPO}/issues/{PR}/comments"
    fake.canned["GET"] = Canned(301, {"message": "Moved Permanently"}, {"Location": elsewhere})
    result = run_memguard(capsys, *comment_args(fake, report))
    assert result.code == 1
    assert "was redirected to another host (http://localhost:" in result.err
    assert len(fake.requests) == 1  # the redirect target never saw the token


# --- the body: truncation and the marker --------------------------------------------------------


def test_long_report_is_cut_at_a_line_boundary_with_a_note(
    fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    lines = ["## pytest-memguard", "", "```text"] + [
        f"tests/test_big.py::test_case[{i:05d}]  12.3 MiB" for i in range(2000)
    ]
    long_report = tmp_path / "memguard.md"
    long_report.write_text("\n".join(lines) + "\n```\n", encoding="utf-8")
    assert len(long_report.read_text()) > github.COMMENT_LIMIT

    result = run_memguard(capsys, *comment_args(fake, long_report))

    assert result.code == 0, result.err
    assert "the comment shows the first" in result.err
    body = fake.calls("POST")[0].body["body"]
    assert len(body) <= github.COMMENT_LIMIT
    assert body.startswith(MARKER + "\n\n## pytest-memguard\n")
    report_part, note = body.split("\n\n---\n_Truncated by pytest-memguard")
    shown = report_part.split("\n")[2:]
    assert shown[-1] == "```"  # the fence the cut left open is closed
    assert shown[:-1] == lines[: len(shown) - 1]  # whole lines only
    assert len(shown) - 1 < len(lines)
    assert f"the first {len(shown) - 1:,} of {len(lines) + 1:,} lines" in note
    assert "`memguard.md`" in note


def test_build_comment_body_boundaries() -> None:
    exact = "x" * (github.COMMENT_LIMIT - len(MARKER) - 2)
    fits = github.build_comment_body(exact, MARKER)
    assert not fits.truncated
    assert fits.text == MARKER + "\n\n" + exact
    assert len(fits.text) == github.COMMENT_LIMIT

    lines = [f"line {i:04d} " + "z" * 40 for i in range(100)]
    cut = github.build_comment_body("\n".join(lines), MARKER, source="`r.md`", limit=2000)
    assert cut.truncated
    assert len(cut.text) <= 2000
    report_part, note = cut.text.split("\n\n---\n")
    assert report_part == MARKER + "\n\n" + "\n".join(lines[: cut.shown_lines])
    assert 0 < cut.shown_lines < 100
    assert cut.total_lines == 100
    assert f"shows the first {cut.shown_lines} of 100 lines" in note
    assert note.endswith("The complete report is in `r.md`._")
    # Not a line more would have fitted.
    with_one_more = len(cut.text) + len(lines[cut.shown_lines]) + 1
    assert with_one_more > 2000


def test_truncation_closes_an_open_tilde_fence() -> None:
    text = "intro\n~~~~\n" + "\n".join(f"row {i}" for i in range(500)) + "\n~~~~\noutro"
    cut = github.build_comment_body(text, MARKER, limit=1000)
    assert cut.truncated
    assert len(cut.text) <= 1000
    assert cut.text.split("\n\n---\n")[0].endswith("\n~~~~")


def test_a_single_line_longer_than_the_limit_is_cut_inside() -> None:
    cut = github.build_comment_body("y" * 100_000, MARKER, limit=1000)
    assert cut.truncated
    assert len(cut.text) <= 1000
    assert cut.text.startswith(MARKER + "\n\nyyy")
    assert "shows the first 1 of 1 lines" in cut.text


def test_upsert_refuses_a_body_without_the_marker_first() -> None:
    client = github.GitHubClient(REPO, TOKEN, "http://127.0.0.1:9")
    with pytest.raises(ValueError, match="must start with the marker"):
        client.upsert_comment(PR, f"report\n{MARKER}", MARKER)


# --- dry run, secrets, entry points -------------------------------------------------------------


def test_dry_run_prints_what_would_be_sent_and_sends_nothing(
    fake: FakeGitHub, report: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    result = run_memguard(capsys, *comment_args(fake, report, "--dry-run", "--marker-id", "linux"))
    assert result.code == 0
    assert fake.requests == []
    assert "nothing is sent" in result.out
    assert "GITHUB_TOKEN is set (not shown)" in result.out
    assert f"GET {fake.api_url}/repos/{REPO}/issues/7/comments?per_page=100" in result.out
    assert f"POST {fake.api_url}/repos/{REPO}/issues/7/comments" in result.out
    assert "<!-- pytest-memguard:comment:linux -->\n\n## pytest-memguard\n" in result.out
    assert "| test_a | 12.0 MiB |" in result.out


def test_dry_run_needs_no_token(report: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_memguard(capsys, "comment", "--markdown", str(report), "--repo", REPO, "--pr", "7", "--dry-run")
    assert result.code == 0
    assert "GITHUB_TOKEN is not set: a real run would stop here with exit status 2" in result.out
    assert "https://api.github.com/repos/octo/widgets/issues/7/comments" in result.out


def test_token_is_never_in_reprs_or_tracebacks() -> None:
    token = github.Token(TOKEN)
    client = github.GitHubClient(REPO, token, f"http://127.0.0.1:{closed_port()}", timeout=2)
    assert TOKEN not in repr(token)
    assert TOKEN not in str(token)
    assert TOKEN not in f"{token}"
    assert TOKEN not in repr(client)
    assert TOKEN not in repr(vars(client))
    with pytest.raises(github.GitHubError) as info:
        client.list_issue_comments(PR)
    assert info.value.status is None
    assert TOKEN not in "".join(traceback.format_exception(info.type, info.value, info.tb))


def test_timeout_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = github.GitHubClient(REPO, TOKEN, f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.2)
        with pytest.raises(github.GitHubError, match=r"no answer within 0\.2 s"):
            client.create_comment(PR, MARKER)


def test_help_version_and_python_dash_m(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("memguard ")
    assert main([]) == 2
    assert "the following arguments are required: COMMAND" in capsys.readouterr().err

    completed = subprocess.run(
        [sys.executable, "-m", "pytest_memguard", "comment", "--help"], capture_output=True, text=True, timeout=30
    )
    assert completed.returncode == 0
    assert completed.stdout.startswith("usage: memguard comment")
    assert "--marker-id NAME" in completed.stdout
