"""MkDocs hook: the command-line and HTTP reference pages, generated at build time.

- ``reference/cli.md`` from the Typer app (``fraudseq.cli.app``): every command, its usage
  line, arguments and options with their help, as ``fraudseq COMMAND --help`` prints them.
- ``reference/http.md`` and ``reference/openapi.json`` from the FastAPI app that
  ``fraudseq serve`` runs (``fraudseq.serving.http.create_app``), built with the settings
  ``serve`` uses, over a model directory holding only the simulator schema: the app reads
  the schema from model.json when it is created and loads the model only when it starts, so
  no model is needed. The request model's columns are the model's schema; another schema
  gives other field names and the same routes.

No copy of either is kept in the repository, so the pages cannot drift from the code.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schemas" / "simulator.toml"
DOCUMENTED_KEY = "documentation-only"  # shows the X-API-Key scheme (serve --api-key-env)


def on_files(files, config):
    for path, content in (
        ("reference/cli.md", cli_markdown()),
        ("reference/openapi.json", json.dumps(openapi_document(), indent=2) + "\n"),
        ("reference/http.md", http_markdown(openapi_document())),
    ):
        files.append(File.generated(config, path, content=content))
    return files


# -- command line ------------------------------------------------------------------------


def cli_markdown() -> str:
    import typer

    from fraudseq.cli import app

    group = typer.main.get_command(app)
    root = group.make_context("fraudseq", [], resilient_parsing=True)
    lines = [
        "# Command line reference",
        "",
        "Generated from the command line itself when the site is built: the text of "
        "`fraudseq --help` and `fraudseq COMMAND --help`. Dates are ISO 8601 (`YYYY-MM-DD` or "
        "a time); periods are `[from, until)`.",
        "",
        "```text",
        group.get_usage(root),
        "```",
        "",
        _params_table(group.params, root),
        "",
    ]
    for name in group.list_commands(root):
        command = group.get_command(root, name)
        ctx = command.make_context(name, [], parent=root, resilient_parsing=True)
        lines += [
            f"## `fraudseq {name}` {{#{name}}}",
            "",
            _clean(command.help or ""),
            "",
            "```text",
            command.get_usage(ctx),
            "```",
            "",
            _params_table(command.params, ctx),
            "",
        ]
    return "\n".join(lines)


def _params_table(params, ctx) -> str:
    """Each argument and option as `--help` shows it (name, value type, help, default)."""
    rows = ["| Argument or option | Help |", "| --- | --- |"]
    for param in params:
        record = param.get_help_record(ctx)
        if record is not None:
            rows.append(f"| `{record[0]}` | {_cell(record[1])} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def _clean(text: str) -> str:
    # click's \b (keep this paragraph's line breaks) and \f (cut here) markers
    return text.split("\f")[0].replace("\b\n", "").strip()


_MARKDOWN_ESCAPES = str.maketrans(
    {"|": "\\|", "[": "\\[", "]": "\\]", "*": "\\*", "_": "\\_", "<": "&lt;", ">": "&gt;"}
)


def _cell(text: str) -> str:
    """Help text as one table cell, printed as written (no Markdown, links or HTML)."""
    return " ".join(_clean(text).split()).translate(_MARKDOWN_ESCAPES)


# -- HTTP -----------------------------------------------------------------------------------

_DOCUMENT: dict[str, Any] | None = None


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the app `fraudseq serve` runs, on the simulator's schema."""
    global _DOCUMENT
    if _DOCUMENT is None:
        from fraudseq.schema import Schema
        from fraudseq.serving.http import create_app
        from fraudseq.serving.http.settings import ServeSettings

        with tempfile.TemporaryDirectory() as model_dir:
            schema = Schema.from_toml(SCHEMA_FILE)
            (Path(model_dir) / "model.json").write_text(
                json.dumps({"schema": schema.to_document()}), encoding="utf-8"
            )
            kwargs = ServeSettings(model_dir=model_dir).app_kwargs()
            kwargs.update(api_key=DOCUMENTED_KEY, freeze_gc=False)
            _DOCUMENT = create_app(**kwargs).openapi()
    return _DOCUMENT


def http_markdown(spec: dict[str, Any]) -> str:
    info = spec["info"]
    lines = [
        "# HTTP API reference",
        "",
        f"`fraudseq serve` (version {info['version']}, OpenAPI {spec['openapi']}). "
        "Generated from the service's own OpenAPI document when the site is built; the "
        "document itself is [openapi.json](openapi.json), and a running service serves it at "
        "`/openapi.json` with interactive pages at `/docs` and `/redoc`.",
        "",
        "The request fields below are those of the simulator's schema "
        "(`schemas/simulator.toml`): a model trained on another schema takes its own column "
        "names. Routes marked **API key** need the `X-API-Key` header when the service runs "
        "with `--api-key-env`; without it, no route needs a key. See "
        "[Live scoring](../serving.md) for the behaviour behind each route.",
        "",
        f"> {_one_line(info.get('summary', ''))}",
        "",
    ]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            lines += _operation(method, path, op)
    lines += ["## Schemas", ""]
    for name, schema in spec["components"]["schemas"].items():
        lines += _schema_section(name, schema)
    return "\n".join(lines)


def _operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"## `{method.upper()} {path}`", "", f"**{op.get('summary', '')}**"]
    if op.get("security"):
        lines[-1] += " · API key"
    lines.append("")
    if op.get("description"):
        lines += [_clean(op["description"]), ""]
    params = op.get("parameters", [])
    if params:
        lines += [
            "| Parameter | In | Type | Required | Description |",
            "| --- | --- | --- | --- | --- |",
        ]
        for p in params:
            lines.append(
                f"| `{p['name']}` | {p['in']} | {_type(p.get('schema', {}))} | "
                f"{'yes' if p.get('required') else 'no'} | {_cell(p.get('description', ''))} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            lines += [f"Request body ({media}): {_type(content.get('schema', {}))}", ""]
    lines += ["| Status | Meaning | Body | Headers |", "| --- | --- | --- | --- |"]
    responses = op.get("responses", {})
    for status, response in sorted(responses.items(), key=lambda item: str(item[0])):
        bodies = ", ".join(
            f"{_type(c['schema'])}" if "schema" in c else media
            for media, c in response.get("content", {}).items()
        )
        headers = ", ".join(f"`{h}`" for h in response.get("headers", {}))
        meaning = _cell(response.get("description", ""))
        lines.append(f"| {status} | {meaning} | {bodies} | {headers} |")
    return [*lines, ""]


def _schema_section(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name} {{#{_anchor(name)}}}", ""]
    if schema.get("description"):
        lines += [_cell(schema["description"]), ""]
    properties = schema.get("properties", {})
    if not properties:
        return [*lines, f"Type: {_type(schema)}", ""]
    required = set(schema.get("required", []))
    lines += ["| Field | Type | Required | Description |", "| --- | --- | --- | --- |"]
    for field, sub in properties.items():
        description = sub.get("description") or _nested_description(sub)
        lines.append(
            f"| `{field}` | {_type(sub)} | {'yes' if field in required else 'no'} | "
            f"{_cell(description)} |"
        )
    return [*lines, ""]


def _nested_description(schema: dict[str, Any]) -> str:
    for option in schema.get("anyOf", []):
        if option.get("description"):
            return option["description"]
    return ""


def _type(schema: dict[str, Any]) -> str:
    """A short type: `string`, `integer \\| null`, `array of [Transaction](#schema-...)`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if "anyOf" in schema or "oneOf" in schema:
        kinds: list[str] = []
        for option in schema.get("anyOf", schema.get("oneOf", [])):
            for kind in _type(option).split(" \\| "):
                if kind not in kinds:
                    kinds.append(kind)
        return " \\| ".join(kinds)
    kind = schema.get("type", "object" if "properties" in schema else "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_type(schema['additionalProperties'])}"
    return kind


def _anchor(name: str) -> str:
    return "schema-" + name.lower()


def _one_line(text: str) -> str:
    return " ".join(text.split())
