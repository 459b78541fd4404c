"""Text preprocessing for the classification loaders (tweets, reviews).

Every step is switchable through `TextCleanConfig`. Steps run in this fixed order:

1. `unescape_html`      ``&amp;`` -> ``&``, ``&quot;`` -> ``"``, ``&#39;`` -> ``'``
                         (Sentiment140 and the airline tweets are HTML-escaped).
2. `remove_html_tags`   ``<br />`` and similar tags -> a space (IMDB reviews). Only tags that start
                         with a letter are removed, so ``<3`` and ``a < b`` survive.
3. `remove_urls`        ``http(s)://...``, ``ftp://...`` and ``www....`` tokens.
4. `remove_mentions`    ``@user`` tokens (an ``@`` preceded by a word character, as in an e-mail
                         address, is kept).
5. `remove_hashtags`    whole ``#tag`` tokens (the word goes too, not only the ``#``). A ``#``
                         preceded by a word character or ``&`` (``&#39;``) is not a hashtag.
6. `lowercase`          ``str.lower()``.
7. `collapse_whitespace` runs of whitespace -> one space, ends stripped.

Unescaping runs first so that an escaped entity cannot be mistaken for a hashtag, and removal runs
before whitespace collapsing so that a removed token leaves no double space behind.

A text that is empty after cleaning is not dropped here: `clean_text` returns ``""`` and the
caller (`mambadiff.data.classification`) applies its ``on_bad_row`` policy to it.
"""

from __future__ import annotations

import dataclasses
import html
import re
import typing
from dataclasses import dataclass

__all__ = ["TextCleanConfig", "CleanConfig", "clean_text", "TextCleaner"]

# Scheme URLs and www-prefixed hosts, up to the next whitespace. Bare domains ("twitpic.com/x")
# are not matched: too many ordinary tokens ("e.g.", "a.m.") look like them.
_URL_RE = re.compile(r"(?:\b(?:https?|ftp)://|\bwww\.)\S+", re.IGNORECASE)
# @mention: not preceded by a word character, so "me@example.com" is left alone.
_MENTION_RE = re.compile(r"(?<!\w)@\w+")
# #hashtag: not preceded by a word character or "&" (so an unescaped "&#39;" is not a hashtag).
_HASHTAG_RE = re.compile(r"(?<![\w&])#\w+")
# Markup tags that start with a letter (optionally "/"): <br>, <br />, </i>, <a href="...">.
_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_WS_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class TextCleanConfig:
    """Which cleaning steps to run (see the module docstring for order and exact behaviour)."""

    remove_urls: bool = True
    remove_mentions: bool = True
    remove_hashtags: bool = True
    lowercase: bool = True
    collapse_whitespace: bool = True
    unescape_html: bool = True
    remove_html_tags: bool = True

    @classmethod
    def none(cls) -> "TextCleanConfig":
        """A config with every step switched off (text passes through unchanged)."""
        return cls(
            remove_urls=False,
            remove_mentions=False,
            remove_hashtags=False,
            lowercase=False,
            collapse_whitespace=False,
            unescape_html=False,
            remove_html_tags=False,
        )


def _to_text_clean(self) -> TextCleanConfig | None:
    """The cleaning steps as a `TextCleanConfig`, or ``None`` when cleaning is switched off."""
    if not self.enabled:
        return None
    return TextCleanConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TextCleanConfig)})


# The config-file form of `TextCleanConfig`: ``enabled`` first, then every step of TextCleanConfig
# with its default, so a new step appears in configs without being listed twice. A plain (mutable)
# dataclass, as the config loader fills it key by key; TextCleanConfig stays frozen.
CleanConfig = dataclasses.make_dataclass(
    "CleanConfig",
    [("enabled", bool, True)]
    + [(f.name, typing.get_type_hints(TextCleanConfig)[f.name], f.default) for f in dataclasses.fields(TextCleanConfig)],
    namespace={
        "__doc__": "Text cleaning (``mambadiff.data.text_clean``); ``enabled: false`` passes text through.",
        "to_text_clean": _to_text_clean,
    },
)
CleanConfig.__module__ = __name__


def clean_text(text: str, config: TextCleanConfig | None = None) -> str:
    """Apply the enabled steps of `config` (default: all) to `text`; may return ``""``."""
    if not isinstance(text, str):
        raise ValueError(f"clean_text: text must be a str, got {type(text).__name__}")
    cfg = TextCleanConfig() if config is None else config
    if cfg.unescape_html:
        text = html.unescape(text)
    if cfg.remove_html_tags:
        text = _TAG_RE.sub(" ", text)
    if cfg.remove_urls:
        text = _URL_RE.sub(" ", text)
    if cfg.remove_mentions:
        text = _MENTION_RE.sub(" ", text)
    if cfg.remove_hashtags:
        text = _HASHTAG_RE.sub(" ", text)
    if cfg.lowercase:
        text = text.lower()
    if cfg.collapse_whitespace:
        text = _WS_RE.sub(" ", text).strip()
    return text


class TextCleaner:
    """`clean_text` bound to one config; a picklable callable (usable in DataLoader workers)."""

    def __init__(self, config: TextCleanConfig | None = None) -> None:
        self.config = TextCleanConfig() if config is None else config

    def __call__(self, text: str) -> str:
        return clean_text(text, self.config)

    def __repr__(self) -> str:
        return f"TextCleaner({self.config!r})"
