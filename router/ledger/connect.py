"""Redis clients for the ledger from a URL: a single server, Sentinel, or Cluster.

::

    redis://[user:password@]host:port/db          one server (rediss:// for TLS)
    unix:///path/to/redis.sock                     one server on a Unix socket
    redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]
                                                   the master Sentinel names ``service``
    redis+cluster://[user:password@]host:port[,host:port...]
                                                   Redis Cluster, from these seed nodes

``rediss+sentinel://`` and ``rediss+cluster://`` use TLS. For Sentinel, the password (if
any) is used for the master and for the sentinels; ``?sentinel_password=`` overrides the
latter. Every key of one tenant shares a hash tag, so each script runs in one Cluster slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

from router.errors import ConfigError

SCHEMES = (
    "redis://",
    "rediss://",
    "unix://",
    "redis+sentinel://",
    "rediss+sentinel://",
    "redis+cluster://",
    "rediss+cluster://",
)


@dataclass(frozen=True)
class RedisTarget:
    """A parsed multi-host URL, without its credentials in ``display``."""

    kind: str  # "sentinel" | "cluster"
    tls: bool
    hosts: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    service: str
    db: int
    sentinel_password: str | None

    @property
    def display(self) -> str:
        scheme = f"{'rediss' if self.tls else 'redis'}+{self.kind}"
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        tail = f"/{self.service}/{self.db}" if self.kind == "sentinel" else ""
        return f"{scheme}://{hosts}{tail}"


def _hosts(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    out = []
    for part in netloc.split(","):
        part = part.strip()
        host, sep, port = part.rpartition(":")
        if not sep or host.endswith(":"):  # no port, or a bare IPv6 address
            host, port = part, ""
        host = host.strip("[]")
        if not host:
            raise ConfigError(f"empty host in Redis URL host list {netloc!r}")
        try:
            out.append((host, int(port) if port else default_port))
        except ValueError:
            raise ConfigError(f"bad port {port!r} in Redis URL host list {netloc!r}") from None
    return tuple(out)


def parse_multi_host(url: str) -> RedisTarget:
    """Parse a ``redis+sentinel://`` or ``redis+cluster://`` URL (see the module docstring)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in (
        "redis+sentinel",
        "rediss+sentinel",
        "redis+cluster",
        "rediss+cluster",
    ):
        raise ConfigError(f"not a Sentinel or Cluster Redis URL: scheme {scheme!r}")
    kind = scheme.split("+", 1)[1]
    # urlsplit rejects comma-separated ports; split the credentials off by hand.
    parts = urlsplit(f"x://{rest}")
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    creds, at, netloc = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = creds.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    hosts = _hosts(netloc, 26379 if kind == "sentinel" else 6379)
    path = [p for p in parts.path.split("/") if p]
    service, db = "", 0
    if kind == "sentinel":
        if not path:
            raise ConfigError(
                "a redis+sentinel:// URL needs the master's service name: "
                "redis+sentinel://host:26379/mymaster[/db]"
            )
        service = unquote(path[0])
        if len(path) > 1:
            try:
                db = int(path[1])
            except ValueError:
                raise ConfigError(f"bad database number {path[1]!r} in Redis URL") from None
    elif path:
        raise ConfigError("a redis+cluster:// URL takes no path: Redis Cluster has only db 0")
    query = parse_qs(parts.query)
    sentinel_password = query.get("sentinel_password", [password or ""])[0] or None
    return RedisTarget(
        kind,
        scheme.startswith("rediss"),
        hosts,
        username,
        password,
        service,
        db,
        sentinel_password,
    )


def connect(url: str, **client_kw: Any) -> tuple[Any, str]:
    """A ``redis.asyncio`` client for ``url`` and a credential-free address for messages."""
    if not url.startswith(SCHEMES):
        scheme = url.split(":", 1)[0]
        raise ConfigError(f"Redis URL must start with one of {', '.join(SCHEMES)}, not {scheme!r}")
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            client = aredis.from_url(url, **client_kw)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"invalid Redis URL or client option: {e}") from e
        return client, redis_address(client)
    target = parse_multi_host(url)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.kind == "sentinel":
        from redis.asyncio.sentinel import Sentinel

        sentinel_kwargs: dict[str, Any] = {"password": target.sentinel_password}
        for k in ("socket_timeout", "socket_connect_timeout"):
            if k in client_kw:
                sentinel_kwargs[k] = client_kw[k]
        if target.tls:
            client_kw.setdefault("ssl", True)
            sentinel_kwargs["ssl"] = True
        # Called through Any: redis-py types Sentinel.__init__ in some releases, not others.
        make_sentinel: Any = Sentinel
        sentinel = make_sentinel(list(target.hosts), sentinel_kwargs=sentinel_kwargs)
        client = sentinel.master_for(target.service, db=target.db, **auth, **client_kw)
        return client, target.display
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    client_kw.pop("retry", None)  # the cluster client retries by itself
    cluster: Any = RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in target.hosts],
        ssl=target.tls,
        **auth,
        **client_kw,
    )
    return cluster, target.display


def redis_address(client: aredis.Redis) -> str:
    """Where ``client`` connects, as a URL without user name or password."""
    pool = client.connection_pool
    kw = pool.connection_kwargs
    if issubclass(pool.connection_class, UnixDomainSocketConnection):
        return f"unix://{kw.get('path', '')}"
    scheme = "rediss" if issubclass(pool.connection_class, SSLConnection) else "redis"
    return f"{scheme}://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
