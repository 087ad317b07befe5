"""One sticky pull-request comment, found again by a hidden marker, through GitHub's REST API.

The only module that talks to the network or reads a token. Standard library only
(``urllib``), so posting a report needs nothing beyond pytest-memguard itself.

* The comment body starts with an HTML comment, the *marker*
  (``<!-- pytest-memguard:comment -->``, or ``<!-- pytest-memguard:comment:NAME -->``
  for several reports on one pull request). An existing comment is ours only when
  its body *starts* with that exact marker line, so a report that quotes the
  marker, or someone else's comment that mentions it, is never taken for ours.
* The token lives in a :class:`Token`, whose ``repr``/``str`` never show it; every
  error message is scrubbed of it; redirects to another host are refused rather
  than followed with the ``Authorization`` header; pagination links must stay on
  the API's own host.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.client import HTTPException, HTTPMessage
from typing import IO, Any

from . import __version__

__all__ = [
    "COMMENT_LIMIT",
    "DEFAULT_API_URL",
    "CommentBody",
    "EventError",
    "GitHubClient",
    "GitHubError",
    "IssueComment",
    "PullRequestTarget",
    "Token",
    "build_comment_body",
    "comment_marker",
    "is_marked",
    "pull_request_from_event",
    "read_event_payload",
    "token_from_env",
    "validate_api_url",
    "validate_repo",
]

DEFAULT_API_URL = "https://api.github.com"
COMMENT_LIMIT = 65_536  # GitHub refuses longer comment bodies (422 "body is too long")
PER_PAGE = 100  # the most GitHub returns per page
TOKEN_VARIABLE = "GITHUB_TOKEN"

_MARKER_NAMESPACE = "pytest-memguard:comment"
# Letters, digits, '.', '_', '-': nothing that could close the HTML comment or add a space.
_MARKER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_REPO_RE = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_MAX_SERVER_MESSAGE = 300


class GitHubError(Exception):
    """A GitHub API call failed; the message says what failed and what to do. Never contains the token."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, or None when no response came back


class EventError(ValueError):
    """The Actions event payload is unreadable or names no pull request."""


class Token:
    """A secret. ``repr``, ``str`` and formatting never show it; :meth:`reveal` does, for the header only."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the token replaced by ``***``."""
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Token('***')"

    __str__ = __repr__


def token_from_env(environ: Mapping[str, str]) -> Token | None:
    """The token from ``GITHUB_TOKEN``, or None when it is unset or blank."""
    value = environ.get(TOKEN_VARIABLE, "").strip()
    return Token(value) if value else None


# --- the comment body -------------------------------------------------------------------------


def comment_marker(marker_id: str | None = None) -> str:
    """The hidden first line that identifies our comment; ``marker_id`` keeps several reports apart."""
    if marker_id is None:
        return f"<!-- {_MARKER_NAMESPACE} -->"
    if not _MARKER_ID_RE.fullmatch(marker_id):
        raise ValueError(
            f"invalid marker id {marker_id!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (for example 'py3.12-linux')"
        )
    return f"<!-- {_MARKER_NAMESPACE}:{marker_id} -->"


def is_marked(body: str, marker: str) -> bool:
    """Whether ``body`` is one of our comments: the exact marker is its whole first line."""
    first_line, _, _ = body.partition("\n")
    return first_line.rstrip("\r") == marker


@dataclass(frozen=True)
class CommentBody:
    """What is sent as the comment: the marker line, then the report, cut to fit when needed."""

    text: str
    truncated: bool
    shown_lines: int
    total_lines: int


def build_comment_body(
    markdown: str, marker: str, *, source: str = "the report file", limit: int = COMMENT_LIMIT
) -> CommentBody:
    """Put ``marker`` first and keep the whole body within ``limit`` characters.

    A report that is too long is cut after its last whole line that fits, a code
    fence left open by the cut is closed, and a note says how much is shown and
    that the complete report is in ``source``.
    """
    head = f"{marker}\n\n"
    report = markdown.strip("\n")
    lines = report.split("\n")
    if len(head) + len(report) <= limit:
        return CommentBody(head + report, truncated=False, shown_lines=len(lines), total_lines=len(lines))

    def note(shown: int) -> str:
        return (
            f"\n\n---\n_Truncated by pytest-memguard: a GitHub comment holds at most {limit:,} characters, "
            f"so this shows the first {shown:,} of {len(lines):,} lines. The complete report is in {source}._"
        )

    budget = limit - len(head) - len(note(len(lines)))
    kept: list[str] = []
    used = 0
    for line in lines:
        cost = len(line) + (1 if kept else 0)
        if used + cost > budget:
            break
        kept.append(line)
        used += cost
    while True:
        fence = _open_fence(kept)
        closing = f"\n{fence}" if fence else ""
        if used + len(closing) <= budget or not kept:
            break
        used -= len(kept.pop()) + (1 if kept else 0)
    if not kept and budget > 0:
        # Not even the first line fits: a cut inside it beats an empty report.
        kept = [lines[0][: max(budget - 1, 0)] + "…"]
        closing = ""
    text = head + "\n".join(kept) + closing + note(len(kept))
    return CommentBody(text, truncated=True, shown_lines=len(kept), total_lines=len(lines))


def _open_fence(lines: list[str]) -> str | None:
    """The fence (such as ``````` or ``~~~~``) still open after ``lines``, if any."""
    open_fence: str | None = None
    for line in lines:
        match = _FENCE_RE.match(line)
        if match is None:
            continue
        fence = match.group(1)
        if open_fence is None:
            open_fence = fence
        elif fence[0] == open_fence[0] and len(fence) >= len(open_fence) and not line.strip().strip(fence[0]):
            open_fence = None
    return open_fence


# --- where to comment: flags and the Actions environment ------------------------------------------


def validate_repo(repo: str) -> str:
    """``OWNER/NAME`` or a ValueError that says so (``..`` is no name: it would walk the API's path)."""
    if not _REPO_RE.fullmatch(repo) or any(part.strip(".") == "" for part in repo.split("/")):
        raise ValueError(f"invalid repository {repo!r}: expected OWNER/NAME, for example 'octo-org/octo-repo'")
    return repo


def validate_api_url(url: str) -> str:
    """An ``https://host[/path]`` base URL without a trailing slash, or a ValueError. Plain
    ``http://`` only to this machine (a local stand-in for the API): the token goes with every
    request, and over plain HTTP anyone on the way could read it."""
    parts = urllib.parse.urlsplit(url.strip())
    local = parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
    if (parts.scheme != "https" and not local) or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(
            f"invalid GitHub API URL {url!r}: expected https://HOST[/PATH], for example https://api.github.com "
            "or https://github.example.com/api/v3 (http:// only to localhost: the token would travel in clear)"
        )
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def read_event_payload(path: str) -> Mapping[str, Any]:
    """The JSON payload at ``GITHUB_EVENT_PATH``."""
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except OSError as exc:
        raise EventError(f"cannot read the event payload GITHUB_EVENT_PATH={path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise EventError(f"the event payload GITHUB_EVENT_PATH={path} is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise EventError(f"the event payload GITHUB_EVENT_PATH={path} is not a JSON object")
    return payload


@dataclass(frozen=True)
class PullRequestTarget:
    """The pull request an Actions event is about.

    ``number`` is None only for a ``workflow_run`` of a pull request from a fork:
    GitHub leaves ``workflow_run.pull_requests`` empty then, so the number is looked
    up from ``head_label`` (``owner:branch``) and ``head_sha`` with the API.
    """

    number: int | None
    head_label: str | None = None
    head_sha: str | None = None
    fork: str | None = None  # OWNER/NAME of the fork the pull request comes from, when known


def pull_request_from_event(payload: Mapping[str, Any], repo: str | None = None) -> PullRequestTarget:
    """The pull request in a ``pull_request``/``pull_request_target``, ``workflow_run`` or ``issue_comment`` payload.

    ``repo`` (OWNER/NAME) picks, among a ``workflow_run``'s pull requests, one whose base is that
    repository: GitHub also lists pull requests into other repositories that have the same head branch.
    """
    pull_request = payload.get("pull_request")
    if isinstance(pull_request, dict) and _positive_int(pull_request.get("number")):
        head_repo = _dig(pull_request, "head", "repo", "full_name")
        base_repo = _dig(pull_request, "base", "repo", "full_name")
        fork = head_repo if isinstance(head_repo, str) and head_repo != base_repo else None
        return PullRequestTarget(pull_request["number"], fork=fork)

    run = payload.get("workflow_run")
    if isinstance(run, dict):
        if run.get("event") not in ("pull_request", "pull_request_target", None):
            raise EventError(
                f"this workflow_run was triggered by a {run.get('event')!r} event, not by a pull request, "
                "so there is no pull request to comment on (add `if: github.event.workflow_run.event == "
                "'pull_request'` to the job)"
            )
        pulls = run.get("pull_requests")
        numbered = [p for p in pulls if isinstance(p, dict) and _positive_int(p.get("number"))] if pulls else []
        if repo is not None and any(isinstance(_dig(p, "base", "repo", "url"), str) for p in numbered):
            suffix = f"/repos/{repo}".lower()
            numbered = [p for p in numbered if str(_dig(p, "base", "repo", "url")).lower().endswith(suffix)]
        if numbered:
            return PullRequestTarget(numbered[0]["number"])
        owner = _dig(run, "head_repository", "owner", "login")
        branch = run.get("head_branch")
        sha = run.get("head_sha")
        if isinstance(owner, str) and isinstance(branch, str) and isinstance(sha, str):
            # No `fork` here: a workflow_run's own token may write, so a 403 has other causes.
            return PullRequestTarget(None, f"{owner}:{branch}", sha)
        raise EventError("the workflow_run event names no pull request and no head branch to find one by")

    issue = payload.get("issue")
    if isinstance(issue, dict) and _positive_int(issue.get("number")):
        return PullRequestTarget(issue["number"])

    raise EventError(
        "the event payload names no pull request (expected pull_request.number, "
        "workflow_run.pull_requests[0].number or issue.number)"
    )


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _dig(data: Mapping[str, Any], *keys: str) -> object:
    current: object = data
    for key in keys:
        if not isinstance(current, dict):
            return None
        current = current.get(key)
    return current


# --- the API client ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IssueComment:
    """One comment on an issue or pull request, as much of it as we use."""

    id: int
    body: str
    html_url: str
    author: str


class _CrossOriginRedirect(Exception):
    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects on the API's host only: elsewhere the Authorization header would go along."""

    def __init__(self, origin: tuple[str, str]) -> None:
        self._origin = origin

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        target = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl))
        if (target.scheme, target.netloc) != self._origin:
            raise _CrossOriginRedirect(f"{target.scheme}://{target.netloc}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class GitHubClient:
    """The few REST calls a sticky comment needs, for one repository on github.com or GitHub Enterprise."""

    def __init__(self, repo: str, token: Token | str, api_url: str = DEFAULT_API_URL, *, timeout: float = 30.0) -> None:
        self.repo = validate_repo(repo)
        self.api_url = validate_api_url(api_url)
        self.timeout = timeout
        self._token = token if isinstance(token, Token) else Token(token)
        parts = urllib.parse.urlsplit(self.api_url)
        self._origin = (parts.scheme, parts.netloc)
        self._opener = urllib.request.build_opener(_SameOriginRedirects(self._origin))

    def __repr__(self) -> str:
        return f"GitHubClient(repo={self.repo!r}, api_url={self.api_url!r})"

    # -- endpoints

    def iter_issue_comments(self, number: int) -> Iterator[IssueComment]:
        """Every comment on issue or pull request ``number``, oldest first, following ``Link: rel="next"``."""
        url: str | None = f"{self._repo_url()}/issues/{number}/comments?per_page={PER_PAGE}"
        seen: set[str] = set()
        what = f"listing the comments of pull request #{number} in {self.repo}"
        while url is not None and url not in seen:
            seen.add(url)
            data, headers = self._request("GET", url, what)
            if not isinstance(data, list):
                raise self._error(f"{what}: expected a JSON list of comments from {self._path(url)}")
            for item in data:
                yield self._comment(item, what)
            url = _next_link(headers.get("Link"))
            if url is not None and self._origin_of(url) != self._origin:
                raise self._error(f"{what}: the next page is on another host ({self._origin_of(url)[1]}); not sent")

    def list_issue_comments(self, number: int) -> list[IssueComment]:
        return list(self.iter_issue_comments(number))

    def create_comment(self, number: int, body: str) -> IssueComment:
        what = f"creating a comment on pull request #{number} in {self.repo}"
        data, _ = self._request("POST", f"{self._repo_url()}/issues/{number}/comments", what, {"body": body})
        return self._comment(data, what)

    def update_comment(self, comment_id: int, body: str) -> IssueComment:
        what = f"updating comment {comment_id} in {self.repo}"
        data, _ = self._request("PATCH", f"{self._repo_url()}/issues/comments/{comment_id}", what, {"body": body})
        return self._comment(data, what)

    def find_comment(self, number: int, marker: str) -> IssueComment | None:
        """The oldest comment on ``number`` whose body starts with ``marker``; stops paging once found."""
        return next((c for c in self.iter_issue_comments(number) if is_marked(c.body, marker)), None)

    def upsert_comment(self, pr: int, body: str, marker: str) -> tuple[str, str]:
        """Create our comment or edit it in place: ``("created" | "updated" | "unchanged", its html_url)``.

        ``body`` must already start with ``marker`` and fit GitHub's limit (see :func:`build_comment_body`).
        """
        if not is_marked(body, marker):
            raise ValueError("the comment body must start with the marker line; build it with build_comment_body()")
        if len(body) > COMMENT_LIMIT:
            raise ValueError(f"the comment body has {len(body):,} characters; GitHub takes at most {COMMENT_LIMIT:,}")
        existing = self.find_comment(pr, marker)
        if existing is None:
            return "created", self.create_comment(pr, body).html_url
        if existing.body.replace("\r\n", "\n") == body:
            return "unchanged", existing.html_url
        return "updated", self.update_comment(existing.id, body).html_url

    def find_pull_request(self, head_label: str, head_sha: str | None = None) -> int:
        """The open pull request whose head is ``owner:branch`` (preferring the one at ``head_sha``)."""
        what = f"looking up the open pull request from {head_label} in {self.repo}"
        query = urllib.parse.urlencode({"head": head_label, "state": "open", "per_page": PER_PAGE})
        data, _ = self._request("GET", f"{self._repo_url()}/pulls?{query}", what)
        if not isinstance(data, list):
            raise self._error(f"{what}: expected a JSON list of pull requests")
        pulls = [p for p in data if isinstance(p, dict) and _positive_int(p.get("number"))]
        numbers = [p["number"] for p in pulls]
        at_sha = [p["number"] for p in pulls if head_sha is not None and _dig(p, "head", "sha") == head_sha]
        if len(at_sha) == 1:
            return int(at_sha[0])
        if len(numbers) == 1:
            return int(numbers[0])
        if not numbers:
            raise self._error(f"{what}: there is none (was it closed?); pass --pr N to choose one")
        raise self._error(f"{what}: several match ({', '.join(f'#{n}' for n in numbers)}); pass --pr N to choose one")

    # -- plumbing

    def _repo_url(self) -> str:
        return f"{self.api_url}/repos/{self.repo}"

    @staticmethod
    def _origin_of(url: str) -> tuple[str, str]:
        parts = urllib.parse.urlsplit(url)
        return parts.scheme, parts.netloc

    @staticmethod
    def _path(url: str) -> str:
        return urllib.parse.urlsplit(url).path

    def _error(self, message: str, status: int | None = None) -> GitHubError:
        return GitHubError(self._token.redact(message), status=status)

    def _comment(self, item: object, what: str) -> IssueComment:
        if not isinstance(item, dict) or not _positive_int(item.get("id")):
            raise self._error(f"{what}: the API answered with something that is not a comment")
        user = item.get("user")
        login = user.get("login") if isinstance(user, dict) else None
        return IssueComment(
            id=item["id"],
            body=item.get("body") or "",
            html_url=str(item.get("html_url") or ""),
            author=login if isinstance(login, str) else "",
        )

    def _request(
        self, method: str, url: str, what: str, payload: Mapping[str, Any] | None = None
    ) -> tuple[Any, HTTPMessage]:
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/vnd.github+json")
        request.add_header("X-GitHub-Api-Version", "2022-11-28")
        request.add_header("User-Agent", f"pytest-memguard/{__version__}")
        request.add_header("Authorization", f"Bearer {self._token.reveal()}")
        if data is not None:
            request.add_header("Content-Type", "application/json; charset=utf-8")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
                headers = response.headers
        # `from None` throughout: the chained urllib exceptions add nothing a person can act on.
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc, method, url, what) from None
        except _CrossOriginRedirect as exc:
            raise self._error(
                f"{what}: {method} {self._path(url)} was redirected to another host ({exc.target}); "
                "not followed, so the token is not sent there. Check GITHUB_API_URL."
            ) from None
        except urllib.error.URLError as exc:
            raise self._connection_error(exc.reason, what) from None
        except (HTTPException, OSError) as exc:
            raise self._connection_error(exc, what) from None
        if not raw.strip():
            return None, headers
        try:
            return json.loads(raw), headers
        except ValueError:
            raise self._error(
                f"{what}: {method} {self._path(url)} answered with something that is not JSON; "
                f"is {self.api_url} the GitHub API (GitHub Enterprise: https://HOST/api/v3)?"
            ) from None

    def _connection_error(self, reason: object, what: str) -> GitHubError:
        if isinstance(reason, (TimeoutError, socket.timeout)):
            detail = f"no answer within {self.timeout:g} s"
        elif isinstance(reason, OSError) and reason.strerror:
            detail = reason.strerror
        else:
            detail = str(reason) or type(reason).__name__
        return self._error(
            f"{what}: cannot reach the GitHub API at {self.api_url} ({detail}). "
            "Check the network, a proxy (HTTPS_PROXY) and GITHUB_API_URL."
        )

    def _http_error(self, exc: urllib.error.HTTPError, method: str, url: str, what: str) -> GitHubError:
        status = exc.code
        headers = exc.headers
        server_says = _server_message(exc)
        call = f"{method} {self._path(url)} answered {status}" + (f" ({server_says})" if server_says else "")
        remaining = headers.get("X-RateLimit-Remaining") if headers else None
        retry_after = headers.get("Retry-After") if headers else None
        rate_limited = status == 429 or (
            status == 403 and (remaining == "0" or retry_after is not None or "rate limit" in server_says.lower())
        )
        if rate_limited:
            reset = _describe_reset(retry_after, headers.get("X-RateLimit-Reset") if headers else None)
            return self._error(f"{what}: GitHub's API rate limit is exhausted: {call}. {reset}", status)
        if status == 401:
            hint = f"the token was refused: {TOKEN_VARIABLE} is wrong, expired or revoked."
        elif status == 403:
            hint = (
                "the token is not allowed to do this. In a workflow, give the job `permissions: "
                "pull-requests: write`. For a pull request from a fork, a `pull_request` workflow's GITHUB_TOKEN "
                "is read-only whatever the workflow asks for: post the comment from a second workflow triggered "
                "by `workflow_run` instead (see the fork-safe example in pytest-memguard's docs/pr-comment.md)."
            )
        elif status == 404 and method == "PATCH":
            hint = "the comment is gone (deleted since it was found?): run again to post a new one."
        elif status == 404:
            hint = (
                f"the repository {self.repo} or that pull request does not exist, or the token cannot see it. "
                "Check --repo / GITHUB_REPOSITORY and --pr; a token for a private repository needs access to it."
            )
        elif status == 422:
            hint = "GitHub refused the request's content."
        elif status >= 500:
            hint = "a GitHub server error, usually temporary: run the job again."
        else:
            hint = "unexpected answer from the GitHub API."
        return self._error(f"{what}: {call}: {hint}", status)


def _server_message(exc: urllib.error.HTTPError) -> str:
    """GitHub's own ``message`` (plus validation ``errors``), or a short plain-text excerpt."""
    try:
        raw = exc.read()
    except (OSError, HTTPException):
        raw = b""
    finally:
        exc.close()
    text = raw.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        message: str = data["message"]
        errors = data.get("errors")
        if isinstance(errors, list):
            details = [e.get("message") or e.get("code") for e in errors if isinstance(e, dict)]
            message += "".join(f"; {d}" for d in details if isinstance(d, str))
    else:
        message = " ".join(text.split())
    if len(message) > _MAX_SERVER_MESSAGE:
        message = message[: _MAX_SERVER_MESSAGE - 1] + "…"
    return message or (exc.reason if isinstance(exc.reason, str) else "")


def _describe_reset(retry_after: str | None, reset_epoch: str | None, now: float | None = None) -> str:
    """When to try again, from ``Retry-After`` (seconds) or ``X-RateLimit-Reset`` (epoch seconds)."""
    now = time.time() if now is None else now
    when: float | None = None
    if retry_after is not None and retry_after.strip().isdigit():
        when = now + int(retry_after)
    elif reset_epoch is not None and reset_epoch.strip().isdigit():
        when = float(reset_epoch)
    if when is None:
        return "GitHub did not say when it resets; wait a few minutes and run again."
    stamp = _dt.datetime.fromtimestamp(when, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    wait = max(0, round(when - now))
    minutes, seconds = divmod(wait, 60)
    in_words = f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
    return f"It resets at {stamp} (in {in_words}); run again after that."


def _next_link(header: str | None) -> str | None:
    """The ``rel="next"`` URL of an RFC 8288 ``Link`` header."""
    if not header:
        return None
    for target, params in re.findall(r"<([^>]*)>((?:\s*;\s*[^;,]*)*)", header):
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "rel" and "next" in value.strip().strip('"').split():
                return str(target)
    return None
