"""URL helpers shared by the services (no third-party dependencies)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_PARAMS = frozenset({"password", "pass", "pwd", "secret", "token", "access_token"})


def redact_url(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://***@host`` (for messages and logs).

    The whole userinfo is masked (user names can be secrets too), and so are
    query parameters that carry a secret (``password=``, which redis-py accepts,
    ``token=``, ...). A URL without secrets comes back unchanged; one that does
    not parse is masked entirely if it may hold userinfo (has an ``@``).
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an invalid IPv6 literal
        return "***" if "@" in url else url
    changed = False
    if "@" in parts.netloc:
        parts = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1])
        changed = True
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
            masked = [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs]
            parts = parts._replace(query=urlencode(masked, safe="*"))
            changed = True
    # Rebuild only when needed: urlunsplit normalizes (sqlite:///x -> sqlite:/x).
    return urlunsplit(parts) if changed else url
