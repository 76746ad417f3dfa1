"""Reading shards and manifests from a local path or an ``http(s)://`` URL, as streams.

A shard is read once, front to back (``tarfile`` stream mode): members are never extracted to disk,
only their bytes held in memory for the sample being built. Every way a shard can fail (a 404, a
connection that stalls past ``timeout``, a file cut short, a member that is not of the format)
raises :class:`ShardError` naming the URL; the stream turns it into bad samples for the rest of
that shard (``data.on_bad_sample``).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vita.errors import DataError


class ShardError(DataError):
    """A shard (or manifest) that cannot be read: ``url`` and what went wrong."""

    def __init__(self, url: str, detail: str) -> None:
        self.url, self.detail = url, detail
        super().__init__(f"{url}: {detail}")


class Member(io.BytesIO):
    """A media member's bytes, decoded in place by vita.data.media; prints as ``shard#member``."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def join(base: str, name: str) -> str:
    """``name`` beside ``base`` (a folder path or a URL prefix ending with ``/``)."""
    return base.rstrip("/") + "/" + name if is_url(base) else str(Path(base) / name)


def open_stream(location: str, timeout: float):
    """A readable binary stream of a local file or URL; raises :class:`ShardError`."""
    if is_url(location):
        try:
            return urllib.request.urlopen(location, timeout=timeout)  # noqa: S310 (http(s) only, checked above)
        except urllib.error.HTTPError as e:
            raise ShardError(location, f"HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ShardError(location, f"cannot connect ({getattr(e, 'reason', e)}; timeout {timeout:g} s)") from None
    try:
        return open(location, "rb")
    except OSError as e:
        raise ShardError(location, f"cannot open ({e.strerror or e})") from None


def read_json(location: str, timeout: float) -> dict:
    """A whole (small) JSON file: the manifest."""
    try:
        with open_stream(location, timeout) as f:
            return json.loads(f.read())
    except ShardError:
        raise
    except (OSError, ValueError) as e:
        raise ShardError(location, f"unreadable JSON ({type(e).__name__}: {e})") from None


@dataclass
class RawSample:
    """One sample as stored: its metadata and its media members' bytes (not decoded)."""

    key: str
    meta: dict
    media: dict[str, bytes] = field(default_factory=dict)


def _read_member(tf: tarfile.TarFile, m: tarfile.TarInfo, location: str) -> bytes:
    data = tf.extractfile(m).read()
    if len(data) != m.size:  # a stream that ends inside a member reads short rather than failing
        raise ShardError(location, f"member {m.name} is cut short ({len(data)} of {m.size} bytes); the shard is "
                         "truncated or the connection dropped")
    return data


def iter_samples(location: str, timeout: float, skip: int = 0, meta_only: bool = False) -> Iterator[RawSample]:
    """The samples of one shard in order, the first ``skip`` passed over (their bytes read, not kept).

    ``meta_only``: the samples' metadata alone (no media bytes); a local shard is then read by seeking
    over the media members (headers and JSON only), a URL still streams them.

    Raises:
        ShardError: the shard cannot be opened or read to its end (the samples before are yielded first).
    """
    stream = open_stream(location, timeout)
    seek = meta_only and not is_url(location)
    size = os.fstat(stream.fileno()).st_size if seek else 0
    try:
        try:
            tf = tarfile.open(fileobj=stream, mode="r:" if seek else "r|")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ShardError(location, f"not a tar shard or cut short ({type(e).__name__}: {e})") from None
        cur: RawSample | None = None
        n = 0  # samples completed so far
        try:
            for m in tf:
                if not m.isfile():
                    continue
                key, _, suffix = os.path.basename(m.name).partition(".")
                if cur is not None and key != cur.key:
                    if n >= skip:
                        yield cur
                    n, cur = n + 1, None
                keep = n >= skip
                if seek and suffix != "json":  # not read, but a cut-off member fails as in a full read
                    data = None
                    if m.offset_data + m.size > size:
                        raise ShardError(location, f"member {m.name} is cut short ({max(0, size - m.offset_data)} of "
                                         f"{m.size} bytes); the shard is truncated or the connection dropped")
                else:
                    data = _read_member(tf, m, location) if keep else None
                if suffix == "json":
                    try:
                        cur = RawSample(key, json.loads(data) if keep else {})
                    except ValueError as e:
                        raise ShardError(location, f"member {m.name}: bad JSON ({e}); re-shard") from None
                elif cur is None or key != cur.key:
                    raise ShardError(location, f"member {m.name} comes before its {key}.json; re-shard")
                elif keep and not meta_only:
                    cur.media[m.name] = data
            if cur is not None and n >= skip:
                yield cur
        except ShardError:
            raise
        except Exception as e:  # tarfile.ReadError, EOFError, http.client.IncompleteRead, socket timeouts
            raise ShardError(location, f"read failed after {n} samples ({type(e).__name__}: {e}); the shard is "
                             "truncated or the connection dropped") from None
    finally:
        stream.close()
