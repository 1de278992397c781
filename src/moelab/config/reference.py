"""The config reference, docs/config.md, generated from the dataclasses themselves: every field's
dotted name, type, default, how it enters the run key, and the comment beside it in sections.py.
A field added to a section appears here without a list to update; tests/test_config.py checks
that docs/config.md is this module's output (`python -m moelab.config.reference > docs/config.md`)."""

from __future__ import annotations

import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing

from moelab.config.keys import key_membership
from moelab.config.sections import RunConfig

KEY_WORDS = {"always": "yes", "if_set": "when not the default", "never": "no"}


def field_comments(cls: type) -> dict[str, str]:
    """The comment on the line of each field of dataclass `cls` (its source), or '' where none."""
    source = textwrap.dedent(inspect.getsource(cls))
    names = {f.name for f in dataclasses.fields(cls)}
    comments: dict[str, str] = {}
    current = None
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME and token.start[1] == 4 and token.string in names and current is None:
            current = token.string
        elif token.type == tokenize.COMMENT and current is not None:
            comments[current] = token.string.lstrip("#").strip()
        elif token.type == tokenize.NEWLINE:
            current = None
    return {name: comments.get(name, "") for name in names}


def _type_text(tp) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " \\| ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("|", "\\|")


def rows(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    """(field, type, default, in the run key, what it means) for every leaf field, in source order."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    membership = key_membership(cls)
    defaults = cls()
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += rows(tp, f"{prefix}{f.name}.")
            continue
        default = getattr(defaults, f.name)
        shown = str(default).lower() if isinstance(default, bool) else repr(default).replace("'", '"')
        out.append((prefix + f.name, _type_text(tp), shown,
                    KEY_WORDS[membership[f.name]], comments[f.name].replace("|", "\\|")))
    return out


def markdown(cls: type = RunConfig) -> str:
    lines = ["# Run config reference", "",
             "Every field of a run config (`moelab train CONFIG.toml`, a sweep's `[base]` and grid), as the",
             "TOML file spells it. Generated from `src/moelab/config/sections.py` by",
             "`python -m moelab.config.reference > docs/config.md`; the comments are the code's own.",
             "\"In the run key\": whether a change of the field makes another run (docs/design.md, run keys).", "",
             "| field | type | default | in the run key | what it is |", "|---|---|---|---|---|"]
    lines += [f"| `{name}` | {tp} | `{default}` | {key} | {what} |" for name, tp, default, key, what in rows(cls)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
