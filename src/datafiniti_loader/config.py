"""Where settings come from: an argument, then the environment, then a default.

Kept apart from the HTTP code so that every entry point (Python API, CLI,
notebooks) resolves the token, the API URL and the cache directory the same way.
"""

from __future__ import annotations

import ipaddress
import netrc
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from .errors import AuthenticationError, ConfigurationError

DEFAULT_API_URL = "https://api.datafiniti.co/v3"
TOKEN_ENV = "DATAFINITI_API_TOKEN"
API_URL_ENV = "DATAFINITI_API_URL"
CACHE_DIR_ENV = "DATAFINITI_CACHE_DIR"
#: Set to 1 to let the token travel over plain http:// to a host other than this machine.
ALLOW_HTTP_ENV = "DATAFINITI_ALLOW_INSECURE_HTTP"

#: Set to 1 to let a remote API's result URLs, and redirects from a remote host,
#: point at this machine or its link-local network (a test rig behind a remote API).
ALLOW_LOCAL_ENV = "DATAFINITI_ALLOW_LOCAL_URLS"

CacheSetting = str | os.PathLike[str] | bool | None


def is_loopback(url: str) -> bool:
    """True when ``url``'s host is this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local(url: str) -> bool:
    """True when ``url`` points at this machine or its link-local network (``169.254.x.x``).

    Host names are not resolved (no lookup leaves the machine for this):
    ``localhost`` counts, other names do not.
    """
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_link_local or address.is_unspecified


def unsafe_hop(source: str, target: str) -> str:
    """Why a client sent from ``source`` to ``target`` must not go; ``""`` when it may.

    A remote API or bucket has no business sending the client to this machine
    or its link-local network (a cloud's metadata service answers at
    169.254.169.254), nor from https:// to plain http:// on another host,
    where the bytes could be read or altered on the way. Each has its opt-out
    for a test rig: :data:`ALLOW_LOCAL_ENV`, :data:`ALLOW_HTTP_ENV`.
    """
    src, dst = urlsplit(source), urlsplit(target)
    if is_local(target) and not is_local(source) and os.environ.get(ALLOW_LOCAL_ENV) != "1":
        return (
            f"points from {src.hostname} to {dst.hostname}, an address of this machine or "
            f"its local network (set {ALLOW_LOCAL_ENV}=1 for a test rig that does this)"
        )
    downgrade = src.scheme == "https" and dst.scheme == "http" and src.hostname != dst.hostname
    if downgrade and os.environ.get(ALLOW_HTTP_ENV) != "1":
        return (
            f"points from https://{src.hostname} to plain http://{dst.hostname} (set "
            f"{ALLOW_HTTP_ENV}=1 for a test rig that does this)"
        )
    return ""


def resolve_api_url(api_url: str | None = None) -> str:
    """Return the API base URL without a trailing slash.

    Raises
    ------
    ConfigurationError
        When the URL is not an http(s) URL ending in ``/v3`` or ``/v4``, or
        would send the token unencrypted (``http://`` to another machine,
        unless ``DATAFINITI_ALLOW_INSECURE_HTTP=1``).
    """
    url = (api_url or os.environ.get(API_URL_ENV) or DEFAULT_API_URL).strip().rstrip("/")
    where = "api_url" if api_url else API_URL_ENV if os.environ.get(API_URL_ENV) else "api_url"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{where} must be an http(s) URL such as {DEFAULT_API_URL!r}, got {url[:80]!r}."
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(
            f"{where} must be a plain base URL such as {DEFAULT_API_URL!r}: no query, "
            "fragment or credentials (pass the token as token=, --token or DATAFINITI_API_TOKEN)."
        )
    if not parts.path.endswith(("/v3", "/v4")):
        raise ConfigurationError(
            f"{where} {url!r} does not end in /v3 or /v4, the API versions this library "
            f"speaks. Use {DEFAULT_API_URL!r} (or .../v4)."
        )
    if parts.scheme == "http" and not is_loopback(url) and os.environ.get(ALLOW_HTTP_ENV) != "1":
        raise ConfigurationError(
            f"{where} {url!r} is plain http://: the API token would cross the network "
            f"unencrypted. Use https://, or set {ALLOW_HTTP_ENV}=1 for a test rig you trust."
        )
    return url


def resolve_token(token: str | None, api_url: str) -> str:
    """Find the API token: argument, ``DATAFINITI_API_TOKEN``, then ``~/.netrc``.

    Raises
    ------
    AuthenticationError
        When none of the three holds a token; the message says how to set one.
    """
    if token:
        return token
    from_env = os.environ.get(TOKEN_ENV)
    if from_env:
        return from_env
    from_netrc = _token_from_netrc(urlsplit(api_url).hostname or "")
    if from_netrc:
        return from_netrc
    raise AuthenticationError(
        "No Datafiniti API token found. Pass token=... (--token), set the "
        f"{TOKEN_ENV} environment variable, or add 'machine "
        f"{urlsplit(api_url).hostname} login YOUR_TOKEN' to ~/.netrc."
    )


def _token_from_netrc(host: str) -> str | None:
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if not host or not path.is_file():
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return None
    if entry is None:
        return None
    login, _account, password = entry
    return login or password or None


def ca_bundle() -> str | None:
    """A CA file from ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE`` or ``SSL_CERT_FILE``, if set.

    Both HTTP stacks verify TLS; this makes them trust the same CAs as
    ``requests`` would (corporate proxies often need their own CA).
    """
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(name)
        if value:
            return value
    return None


#: Caches of the sandboxes running in this process, by their API's host and port
#: (a callable: the sandbox makes its directory only when a load first needs it).
_SANDBOX_CACHES: dict[str, Callable[[], Path]] = {}


def use_sandbox_cache(api_url: str, cache: Callable[[], Path] | None) -> None:
    """Make loads from a sandbox's API default to ``cache()`` (``None``: forget it).

    A sandbox's downloads are test data: they belong in its own temporary
    directory, removed with it, not in the user's cache.
    """
    host = urlsplit(api_url).netloc
    if cache is None:
        _SANDBOX_CACHES.pop(host, None)
    else:
        _SANDBOX_CACHES[host] = cache


def resolve_cache_dir(cache: CacheSetting, api_url: str | None = None) -> Path | None:
    """Return the cache directory, or ``None`` when caching is off.

    ``cache=None`` means the environment's ``DATAFINITI_CACHE_DIR``; failing
    that, for the API of a sandbox running in this process, the sandbox's own
    cache; else the platform's user cache directory. ``cache=False`` means no
    cache.
    """
    if cache is False:
        return None
    if cache is None or cache is True:
        from_env = os.environ.get(CACHE_DIR_ENV)
        if from_env:
            return Path(from_env).expanduser()
        sandbox = _SANDBOX_CACHES.get(urlsplit(api_url).netloc) if api_url else None
        if sandbox is not None:
            return sandbox()
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("datafiniti-loader", appauthor=False))
    return Path(cache).expanduser()


def positive_count(name: str, value: int | None) -> int | None:
    """``value`` once it is a positive whole number (``None`` passes): nrows, max_records."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive whole number; got {value!r}.")
    return value
