"""The documentation against the code, so that neither drifts from the other.

- The site (mkdocs.yml over docs/) builds with ``mkdocs build --strict``: a broken link or
  anchor, a page missing from the nav's files, an API reference to a name that no longer
  exists or a docstring that does not match its signature fails.
- Every ``fraudseq ...`` command in a ```bash or ```console block of README.md and docs/*.md,
  and in examples/*.sh, is parsed by the real command line (the command exists, each option
  exists and takes the value given, each value passes the option's checks: dates,
  strategies, model names, writable output paths); see `test_every_documented_command_parses`.
  tests/test_docs_run.py then runs them, page by page in a sandbox; the few it only parses
  are listed there with the reason.
- The getting-started sequence (docs/getting-started.md, the block after the marker comment)
  runs as written, in a temporary directory, through the real entry point; README.md's
  Python block then runs on its outputs.
- Every schema example (```toml) loads; every ```python block compiles and its fraudseq
  imports exist.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest
import typer

from test_cli import run

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
RUN_MARKER = "<!-- tests/test_docs.py runs the next block line by line -->"
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ">", ">>", "2>", "2>&1", "<"}


def shell_lines(text: str) -> list[str]:
    """The logical command lines of a document's ```bash and ```console blocks:
    continuation lines joined; in a console block only the `$ ` lines and their
    continuations (the rest is output)."""
    lines = []
    for language, body in FENCE.findall(text):
        if language not in ("bash", "sh", "shell", "console"):
            continue
        pending = None
        for raw in body.splitlines():
            if pending is None and language == "console":
                if not raw.startswith("$ "):
                    continue
                raw = raw[2:]
            line = raw if pending is None else pending + " " + raw.strip()
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1].rstrip()
                continue
            pending = None
            lines.append(line)
    return lines


def command_words(line: str) -> list[str] | None:
    """The words of the `fraudseq` command on a line, without what comes before it
    (`VAR=value`, `/usr/bin/time ...`) or after it (pipes, redirections, `&`, comments);
    None when the line runs no fraudseq command."""
    words = shlex.split(line, comments=True)
    if "fraudseq" not in words:
        return None
    words = words[words.index("fraudseq") + 1 :]
    for i, word in enumerate(words):
        if word in SHELL_OPERATORS:
            return words[:i]
    return words


def synopsis_variants(words: list[str]) -> list[list[str]]:
    """A usage synopsis such as `monitor M D [--until X] [--a A | --b]` as concrete
    commands: every optional group in, with its first alternatives, then its second..."""
    if not any(w.startswith("[") for w in words):
        return [words]
    plain, groups, group = [], [], None
    for word in words:
        if word.startswith("[") and group is None:
            group, word = [[]], word[1:]
        if group is None:
            plain.append(word)
            continue
        closing = word.endswith("]")
        word = word[:-1] if closing else word
        if word == "|":
            group.append([])
        elif word:
            group[-1].append(word)
        if closing:
            groups.append(group)
            group = None
    widest = max(len(g) for g in groups)
    return [plain + [w for g in groups for w in g[min(k, len(g) - 1)]] for k in range(widest)]


def documented_commands() -> list[tuple[str, list[str]]]:
    """The commands of the documents' shell blocks, and of the example scripts they show."""
    found = []
    for path in [*DOCUMENTS, *sorted((ROOT / "examples").glob("*.sh"))]:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".sh":
            text = f"```bash\n{text}```\n"
        for line in shell_lines(text):
            words = command_words(line)
            if words is not None:
                where = f"{path.name}: {line.strip()[:90]}"
                found += [(where, variant) for variant in synopsis_variants(words)]
    return found


COMMANDS = documented_commands()


def parse(args: list[str]) -> None:
    """Parse `fraudseq ARGS` as the entry point would, without running the command: the
    command must exist, and its arguments and options parse (callbacks included)."""
    from fraudseq.cli import app

    group = typer.main.get_command(app)
    root = group.make_context("fraudseq", [], resilient_parsing=True)
    assert args and not args[0].startswith("-"), f"no command in {args}"
    command = group.get_command(root, args[0])
    assert command is not None, f"fraudseq has no command {args[0]!r}"
    command.make_context(args[0], args[1:], parent=root)


def test_the_docs_show_commands():
    """The extraction finds the commands (so the parse test cannot pass on nothing)."""
    names = {args[0] for _, args in COMMANDS}
    assert len(COMMANDS) >= 40
    assert {"check", "simulate", "train", "score", "evaluate", "report", "serve"} <= names


@pytest.mark.parametrize("where, args", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_documented_command_parses(where, args, tmp_path, monkeypatch):
    """Each command parses against the real CLI. Only parsed, not run: what they need (a
    Redis, a Ray cluster, a registry, a large file) is beyond a unit test; the commands of
    docs/getting-started.md are also run, below."""
    monkeypatch.chdir(tmp_path)  # output paths are checked for writability: relative here
    # models:/ URIs would be downloaded from the registry while parsing (the callback imports
    # fraudseq.mlflow then): a stand-in module says where instead, without importing MLflow
    registry = types.ModuleType("fraudseq.mlflow")
    registry.resolve_model_uri = lambda uri, dst=None: Path("m")
    monkeypatch.setitem(sys.modules, "fraudseq.mlflow", registry)
    from fraudseq.errors import FraudseqError

    try:
        parse(args)
    except (typer.TyperException, FraudseqError) as exc:  # usage errors; option checks
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        pytest.fail(f"{where}\n  fraudseq {shlex.join(args)}\n  {message}")


def test_parse_refuses_what_the_cli_refuses(tmp_path, monkeypatch):
    """The check has teeth: a missing option, a bad value and an unknown command fail."""
    from fraudseq.errors import FraudseqError

    monkeypatch.chdir(tmp_path)
    parse(["score", "model", "tx.csv", "--out", "s.csv", "--from", "2026-02-16"])
    for bad in (
        ["score", "model", "tx.csv", "--out", "s.csv", "--no-such-option", "1"],
        ["score", "model", "tx.csv", "--out", "s.csv", "--from", "16/02/2026"],
        ["threshold", "model", "tx.csv", "--strategy", "budget"],
        ["score", "model", "tx.csv", "extra-argument", "--out", "s.csv"],
    ):
        with pytest.raises((typer.TyperException, FraudseqError)):
            parse(bad)
    with pytest.raises(AssertionError, match="no command"):
        parse(["scoer", "model"])


def test_synopsis_variants():
    words = shlex.split("monitor m d --from X [--until Y] [--ra A --rb B | --stored] [--json j]")
    assert synopsis_variants(words) == [
        shlex.split("monitor m d --from X --until Y --ra A --rb B --json j"),
        shlex.split("monitor m d --from X --until Y --stored --json j"),
    ]


def blocks(language: str) -> list[tuple[str, str]]:
    return [
        (f"{path.name} block {i}", body)
        for path in DOCUMENTS
        for i, (lang, body) in enumerate(FENCE.findall(path.read_text(encoding="utf-8")))
        if lang == language
    ]


@pytest.mark.parametrize("where, body", blocks("toml"), ids=[w for w, _ in blocks("toml")])
def test_every_documented_schema_loads(where, body):
    """Each schema example (```toml) is a valid schema."""
    import tomllib

    from fraudseq.schema import Schema

    Schema.from_document(tomllib.loads(body), source=where)


@pytest.mark.parametrize("where, body", blocks("python"), ids=[w for w, _ in blocks("python")])
def test_every_documented_python_block_compiles_and_imports(where, body):
    """Each ```python block compiles, and what it imports from fraudseq exists. (Only
    README.md's block is also run, below: the others need a registry or a full-size run.)"""
    import ast
    import importlib
    import importlib.util

    tree = ast.parse(body, filename=where)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fraudseq":
                    assert importlib.util.find_spec(alias.name), f"{where}: no {alias.name}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fraudseq"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module} has no {alias.name}"


def test_site_builds_strict(tmp_path):
    """`mkdocs build --strict`, as `make docs` runs it; the generated reference pages hold
    every command and every route."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # about 7 s of CPU; minutes of wall time on a loaded machine
        check=False,
    )
    assert done.returncode == 0, (
        f"mkdocs build --strict failed (install the docs extra: pip install -e '.[docs]'):\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    )
    cli_page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("check", "simulate", "train", "score", "evaluate", "serve", "consume"):
        assert f'id="{command}"' in cli_page
    document = json.loads((site / "reference" / "openapi.json").read_text(encoding="utf-8"))
    http_page = (site / "reference" / "http" / "index.html").read_text(encoding="utf-8")
    assert {"/v1/score", "/v1/score/batch", "/v1/feedback", "/healthz"} <= set(document["paths"])
    for path, operations in document["paths"].items():
        for method in operations:
            assert f"{method.upper()} {path}" in http_page
    design = (site / "design" / "index.html").read_text(encoding="utf-8")
    assert "The way data flows" in design  # DESIGN.md, included
    assert (site / "img" / "report.png").stat().st_size > 10_000


def code_block(path: Path, language: str, after: str | None = None) -> str:
    text = path.read_text(encoding="utf-8")
    if after is not None:
        assert after in text, f"{path.name} lost its marker {after!r}"
        text = text[text.index(after) :]
    match = re.search(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert match, f"no ```{language} block in {path.name}"
    return match.group(1)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The getting-started block, run as written (one torch thread), in a directory that has
    the repository's schemas/: the directory, with its outputs."""
    import torch

    work = tmp_path_factory.mktemp("getting_started")
    (work / "schemas").symlink_to(ROOT / "schemas", target_is_directory=True)
    block = code_block(ROOT / "docs" / "getting-started.md", "bash", after=RUN_MARKER)
    lines = shell_lines(f"```bash\n{block}```\n")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.chdir(work)
            for line in lines:
                words = command_words(line)
                assert words is not None and words == shlex.split(line)[1:], line
                assert run(monkeypatch, *words) == 0, line
    finally:
        torch.set_num_threads(threads)
    return work


def test_getting_started_runs(first_run):
    import pandas as pd

    scores = pd.read_csv(first_run / "scores.csv")
    assert list(scores.columns) == ["transaction_id", "score", "alert"]
    metrics = json.loads((first_run / "metrics.json").read_text())
    assert 0 < metrics["average_precision"] <= 1
    assert (first_run / "report.html").stat().st_size > 10_000
    assert (first_run / "model" / "manifest.json").exists()


def test_readme_python_runs(first_run, monkeypatch, capsys):
    """README.md's Python lines, run as written after the getting-started sequence (they
    read its tx.csv.gz)."""
    import torch

    monkeypatch.chdir(first_run)
    source = code_block(ROOT / "README.md", "python")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(source, "README.md", "exec"), {"__name__": "readme"})
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "fraud_probability" in out


def test_version(capsys, monkeypatch):
    from importlib.metadata import version

    assert run(monkeypatch, "--version") == 0
    assert capsys.readouterr().out.strip() == f"fraudseq {version('fraudseq')}"
