"""The ``memguard`` command (also ``python -m pytest_memguard``).

Each subcommand is one ``add_<name>_command(subparsers)`` function that registers
its parser and sets ``handler=`` (a function ``(args, parser) -> exit status``)
and ``command_parser=`` (its own parser, for argparse-style usage errors).
Add a subcommand by writing such a function and listing it in ``COMMANDS``.

Exit status: 0 success, 1 the operation failed (for ``comment``: the GitHub API
call), 2 usage or configuration error, as argparse does.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, github
from .baseline_cli import add_compare_command, add_merge_command

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["COMMANDS", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``memguard`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status; never exits."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler: Callable[[argparse.Namespace, argparse.ArgumentParser], int] = args.handler
        return handler(args, args.command_parser)
    except SystemExit as exc:  # argparse's usage errors, --help and --version
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memguard",
        description="pytest-memguard's command line: work with the reports `pytest --memguard` writes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    subparsers.required = True
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


# --- memguard comment -------------------------------------------------------------------------


def add_comment_command(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "comment",
        help="post a markdown report as one pull-request comment, edited in place on later runs",
        description=(
            "Post the report as ONE pull-request comment and edit that same comment on later runs, found by a "
            "hidden marker on its first line. The token comes from GITHUB_TOKEN; the repository and pull request "
            "from --repo/--pr or, in GitHub Actions, from GITHUB_REPOSITORY and the event payload."
        ),
        epilog=(
            "environment: GITHUB_TOKEN (required, never printed), GITHUB_REPOSITORY, GITHUB_EVENT_PATH, "
            "GITHUB_API_URL (GitHub Enterprise; default https://api.github.com). "
            "exit status: 0 posted, 1 the GitHub API call failed, 2 usage or configuration error."
        ),
    )
    parser.add_argument("--markdown", required=True, metavar="FILE", help="the markdown report to post")
    parser.add_argument("--repo", type=_repo_arg, metavar="OWNER/NAME", help="default: $GITHUB_REPOSITORY")
    parser.add_argument(
        "--pr",
        type=_positive_int_arg,
        metavar="N",
        help="pull request number; default: from the Actions event payload ($GITHUB_EVENT_PATH)",
    )
    parser.add_argument(
        "--marker-id",
        type=_marker_id_arg,
        metavar="NAME",
        help="keep several reports on one pull request apart (e.g. one per matrix job): each NAME gets its own comment",
    )
    parser.add_argument("--api-url", metavar="URL", help=f"default: $GITHUB_API_URL or {github.DEFAULT_API_URL}")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be sent (never the token); send nothing"
    )
    parser.set_defaults(handler=run_comment, command_parser=parser)


def run_comment(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    environ: Mapping[str, str] = os.environ
    marker = github.comment_marker(args.marker_id)
    path = Path(args.markdown)
    try:
        markdown = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        parser.error(f"--markdown {path} is not UTF-8 text")
    except OSError as exc:
        parser.error(f"cannot read --markdown {path}: {exc.strerror or exc}")
    if not markdown.strip():
        parser.error(f"--markdown {path} is empty: nothing to post (did the pytest run write its report?)")

    repo = args.repo or environ.get("GITHUB_REPOSITORY", "").strip()
    if not repo:
        parser.error("no repository: pass --repo OWNER/NAME, or run in GitHub Actions (which sets GITHUB_REPOSITORY)")
    try:
        github.validate_repo(repo)
        api_url = github.validate_api_url(args.api_url or environ.get("GITHUB_API_URL") or github.DEFAULT_API_URL)
    except ValueError as exc:
        parser.error(str(exc))
    target = _pull_request_target(args.pr, repo, environ, parser)

    body = github.build_comment_body(markdown, marker, source=f"`{path.name}` (for example, the workflow's artifact)")
    token = github.token_from_env(environ)
    if args.dry_run:
        _print_dry_run(repo, api_url, target, marker, body, token is not None)
        return EXIT_OK
    if token is None:
        parser.error(
            f"{github.TOKEN_VARIABLE} is not set: the comment is posted with that token. In a workflow, add "
            "`env: GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}` to the step and `permissions: pull-requests: write` "
            "to the job; locally, export a token that may comment on the repository (or use --dry-run)."
        )
    if body.truncated:
        print(
            f"memguard comment: note: the report has {body.total_lines:,} lines, more than a GitHub comment holds "
            f"({github.COMMENT_LIMIT:,} characters); the comment shows the first {body.shown_lines:,}.",
            file=sys.stderr,
        )

    client = github.GitHubClient(repo, token, api_url)
    try:
        number = target.number
        if number is None:
            assert target.head_label is not None  # pull_request_from_event gives one or the other
            number = client.find_pull_request(target.head_label, target.head_sha)
        action, url = client.upsert_comment(number, body.text, marker)
    except github.GitHubError as exc:
        print(f"memguard comment: error: {exc}", file=sys.stderr)
        # pull_request_target runs get a writable token even for forks: the hint would mislead there.
        if exc.status == 403 and target.fork and environ.get("GITHUB_EVENT_NAME") != "pull_request_target":
            print(
                f"memguard comment: this pull request comes from the fork {target.fork}, so this workflow's "
                "GITHUB_TOKEN is read-only: use the workflow_run pattern (see docs/pr-comment.md).",
                file=sys.stderr,
            )
        return EXIT_FAILURE
    where = f"the comment on pull request #{number} in {repo}"
    done = {"created": f"created {where}", "updated": f"updated {where}"}.get(action, f"{where} is already up to date")
    print(f"memguard: {done}: {url}")
    return EXIT_OK


def _pull_request_target(
    pr: int | None, repo: str, environ: Mapping[str, str], parser: argparse.ArgumentParser
) -> github.PullRequestTarget:
    event_path = environ.get("GITHUB_EVENT_PATH", "").strip()
    if pr is not None:
        # The number is given; the payload, when there is one, only tells whether the PR is from a fork.
        fork = None
        if event_path:
            try:
                from_event = github.pull_request_from_event(github.read_event_payload(event_path), repo)
                fork = from_event.fork if from_event.number == pr else None
            except github.EventError:
                pass
        return github.PullRequestTarget(pr, fork=fork)
    if not event_path:
        parser.error(
            "no pull request number: pass --pr N, or run in a GitHub Actions workflow triggered by a pull request "
            "(GITHUB_EVENT_PATH is not set)"
        )
    try:
        return github.pull_request_from_event(github.read_event_payload(event_path), repo)
    except github.EventError as exc:
        parser.error(f"no pull request number: {exc}; pass --pr N")


def _print_dry_run(
    repo: str,
    api_url: str,
    target: github.PullRequestTarget,
    marker: str,
    body: github.CommentBody,
    have_token: bool,
) -> None:
    repo_url = f"{api_url}/repos/{repo}"
    number = f"#{target.number}" if target.number is not None else "N"
    lines = ["memguard comment --dry-run: nothing is sent.", f"repository:   {repo} (API {api_url})"]
    if target.number is not None:
        lines.append(f"pull request: #{target.number}")
    else:
        lines.append(f"pull request: N = the open pull request from {target.head_label} (looked up when run for real)")
    lines += [
        f"marker:       {marker}",
        "token:        "
        + (
            f"{github.TOKEN_VARIABLE} is set (not shown)"
            if have_token
            else f"{github.TOKEN_VARIABLE} is not set: a real run would stop here with exit status 2"
        ),
        f"requests:     GET {repo_url}/issues/{number.lstrip('#')}/comments?per_page={github.PER_PAGE} "
        "(every page) to find the comment whose first line is the marker,",
        f"              then PATCH {repo_url}/issues/comments/ID to update it, "
        f"or POST {repo_url}/issues/{number.lstrip('#')}/comments to create it, with this body:",
    ]
    size = f"{len(body.text):,} characters"
    if body.truncated:
        size += f"; the report was cut to {body.shown_lines:,} of {body.total_lines:,} lines to fit"
    lines += [f"--- body ({size}) ---", body.text, "--- end of body ---"]
    print("\n".join(lines))


def _repo_arg(value: str) -> str:
    try:
        return github.validate_repo(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _marker_id_arg(value: str) -> str:
    try:
        github.comment_marker(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _positive_int_arg(value: str) -> int:
    if not value.isdigit() or int(value) == 0:
        raise argparse.ArgumentTypeError(f"invalid pull request number {value!r}: expected a positive integer")
    return int(value)


COMMANDS: list[Callable[[SubParsers], None]] = [add_compare_command, add_merge_command, add_comment_command]
