"""What an attachment is: the allowed kinds, the type decided from the bytes alone, and the
name it is shown and served under (docs/attachments.md).

The type is decided from the content alone: magic numbers (``filetype``), a strict text rule
(UTF-8, no NUL, not markup or a script) and, for images, a full decode by Pillow (in
chatd/images.py). The customer's filename is display metadata: it is sanitised and must not
contradict the content.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import quote, unquote

import filetype  # type: ignore[import-untyped]  # the package ships no type hints

from .core.errors import BadRequest, DeskError

_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


class UnsupportedType(DeskError):
    """The content is not one of the allowed types (HTTP 415)."""

    code = "unsupported_type"


@dataclass(frozen=True, slots=True)
class Kind:
    """One allowed type of attachment."""

    name: str
    label: str  # for people: "PNG image"
    content_type: str  # served as this, whatever the client declared
    extensions: tuple[str, ...]  # the first is added to names without an extension
    image_format: str | None = None  # Pillow's name for it; images are shown inline

    @property
    def is_image(self) -> bool:
        return self.image_format is not None


TEXT_EXTENSIONS = (".txt", ".log", ".json", ".csv", ".xml", ".yaml", ".yml", ".har")

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("png", "PNG image", "image/png", (".png",), "PNG"),
        Kind("jpeg", "JPEG image", "image/jpeg", (".jpg", ".jpeg"), "JPEG"),
        Kind("gif", "GIF image", "image/gif", (".gif",), "GIF"),
        Kind("webp", "WebP image", "image/webp", (".webp",), "WEBP"),
        Kind("text", "text file", "text/plain; charset=utf-8", TEXT_EXTENSIONS),
        Kind("gzip", "gzip archive", "application/gzip", (".gz", ".tgz")),
        Kind("zip", "zip archive", "application/zip", (".zip",)),
        Kind("pdf", "PDF document", "application/pdf", (".pdf",)),
    )
}

# filetype's answer for the allowed binary kinds; zip containers are matched by their own
# magic number below, whatever filetype calls them (docx, epub, jar are zips too).
_MIME_KINDS = {
    "image/png": "png",
    "image/apng": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
    "application/gzip": "gzip",
    "application/zip": "zip",
    "application/pdf": "pdf",
}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")

# Markup a browser would render as a page or an image with scripts, were it ever served as
# anything but text: the tags of the WHATWG MIME-sniffing rules for HTML, plus SVG and XSLT.
_PAGE_TAGS = frozenset(
    "html head body script iframe h1 div font table a style title b br p svg math object "
    "embed frameset frame img link meta form base xsl:stylesheet stylesheet".split()
)
_DANGEROUS_NAMESPACES = ("http://www.w3.org/1999/xhtml", "http://www.w3.org/2000/svg")
_FIRST_TAG = re.compile(r"<([a-z][a-z0-9:._-]*)")


def describe_allowed(kinds: Collection[str]) -> str:
    """The allowed types in words, for error messages and docs."""
    parts: list[str] = []
    images = [n for k, n in (("png", "PNG"), ("jpeg", "JPEG"), ("gif", "GIF"), ("webp", "WebP"))
              if k in kinds]
    if images:
        parts.append(f"{_words(images)} images")
    if "text" in kinds:
        parts.append("text logs (.log, .txt, .json, .csv, .xml, .yaml, .har)")
    archives = [a for k, a in (("gzip", ".gz"), ("gzip", ".tar.gz"), ("zip", ".zip"))
                if k in kinds]
    if archives:
        parts.append(f"{_words(archives)} archives")
    if "pdf" in kinds:
        parts.append("PDF documents")
    return "; ".join(parts) if parts else "nothing"


def _words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def refuse(what: str, allowed: Collection[str]) -> UnsupportedType:
    return UnsupportedType(
        f"{what}. Allowed: {describe_allowed(allowed)}.",
        allowed=[k for k in KINDS if k in allowed],
    )


# ---------------------------------------------------------------------- type detection


def text_verdict(data: bytes, *, final: bool) -> bool:
    """Whether ``data`` passes the strict text rule on its own (UTF-8, no NUL); with
    ``final=False`` a multi-byte character cut at the end is forgiven."""
    if b"\0" in data:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=final)
    except UnicodeDecodeError:
        return False
    return True


def markup_problem(head: bytes) -> str | None:
    """What the start of a text file is, when it is a page, an SVG image or a script."""
    text = head.decode("utf-8", "ignore").lstrip("\ufeff \t\r\n\f").lower()
    if text.startswith("#!"):
        return "scripts"
    if not text.startswith("<"):
        return None
    page = "HTML pages and SVG images"
    if "<?xml-stylesheet" in text or any(ns in text for ns in _DANGEROUS_NAMESPACES):
        return page
    # Skip the prolog (XML declaration, comments, doctype) to the first element. Each step
    # only moves forward: linear in the size of the head whatever it holds.
    i = 0
    while True:
        while i < len(text) and text[i] in " \t\r\n\f":
            i += 1
        if text.startswith("<?", i):
            closer = "?>"
        elif text.startswith("<!--", i):
            closer = "-->"
        elif text.startswith("<!", i):
            closer = ">"
        else:
            break
        end = text.find(closer, i + 2)
        if closer == ">":
            doctype = text[i : end if end >= 0 else len(text)]
            if doctype.startswith("<!doctype") and ("html" in doctype or "svg" in doctype):
                return page
        if end < 0:
            return None  # the prolog runs past the head: no element to judge
        i = end + len(closer)
    match = _FIRST_TAG.match(text, i)
    if match is None:
        return None
    tag = match.group(1)
    if tag in _PAGE_TAGS or tag.rsplit(":", 1)[-1] in _PAGE_TAGS:
        return page
    return None


def detect(head: bytes, is_text: bool, allowed: Collection[str]) -> Kind:
    """The kind of a file from its first bytes and whether all of it is text, or
    UnsupportedType naming what it is and what is allowed."""
    if not head:
        raise BadRequest("the file is empty")
    name: str | None = None
    guess = filetype.guess(head)
    if head.startswith(_ZIP_MAGIC):
        name = "zip"
    elif guess is not None and guess.mime in _MIME_KINDS:
        name = _MIME_KINDS[guess.mime]
    elif is_text:
        problem = markup_problem(head)
        if problem is not None:
            raise refuse(f"{problem} cannot be attached", allowed)
        name = "text"
    if name is None:
        if guess is not None:
            raise refuse(
                f"this file is a .{guess.extension} file ({guess.mime}), which cannot be "
                "attached",
                allowed,
            )
        raise refuse("this file is binary data of an unknown type, which cannot be attached",
                     allowed)
    if name not in allowed:
        raise refuse(f"{KINDS[name].label}s are not accepted here", allowed)
    return KINDS[name]


# ---------------------------------------------------------------------- filenames


def sanitize_filename(raw: str | None) -> str:
    """A display name from the client's: the last path part only, without control or format
    characters (such as right-to-left overrides), quotes, angle brackets or characters that
    are reserved in file names; at most 150 characters. May be empty."""
    name = raw or ""
    if _PERCENT_ESCAPE.search(name):
        # Browsers send '"', CR and LF as %22, %0D and %0A (WHATWG form encoding) and some
        # clients escape every byte: decode before looking for path separators.
        name = unquote(name, errors="replace")
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    out = []
    for ch in name:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            continue
        out.append("_" if ch in "\"'`<>:;|?*%" else ch)
    name = re.sub(r"\s+", " ", "".join(out)).strip(" ._")
    if len(name) > 150:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: 149 - len(ext)].rstrip(" ._") + "." + ext
        else:
            name = name[:150].rstrip(" ._")
    return name


def _extension(name: str) -> str | None:
    """The extension that says what a file is: ``app.log.1`` and ``app.log-20250101`` (log
    rotation) are .log files; None when there is none."""
    parts = name.lower().split(".")[1:]
    while parts and re.fullmatch(r"\d+", parts[-1]):
        parts.pop()
    if not parts:
        return None
    return "." + re.sub(r"[-_]\d{6,14}$", "", parts[-1])


_KNOWN_EXTENSIONS = {ext: kind for kind in KINDS.values() for ext in kind.extensions}


def display_name(raw: str | None, kind: Kind, allowed: Collection[str]) -> str:
    """The sanitised name to show and send in headers; refused when its extension says
    another type than the content (an HTML page named .png) or a type that is not allowed."""
    name = sanitize_filename(raw)
    ext = _extension(name)
    if ext is None:
        return (name or "attachment") + kind.extensions[0]
    if ext in kind.extensions:
        return name
    claimed = _KNOWN_EXTENSIONS.get(ext)
    if claimed is not None:
        raise refuse(
            f"{name!r} is named like a {claimed.label} but its content is a {kind.label}",
            allowed,
        )
    raise refuse(f"{ext} files cannot be attached", allowed)


def content_disposition(filename: str, *, inline: bool) -> str:
    """RFC 6266: an ASCII fallback for old clients, then the exact UTF-8 name."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"

