"""A client of the Git LFS batch API (basic transfer adapter) on `requests`.

One batch request per 100 objects tells what the server lacks (upload) or where each object
is (download); the object bodies then travel in parallel on a thread pool, each request
retried with exponential backoff on connection errors, timeouts, truncated bodies, HTTP 429
and 5xx. Downloads stream into a temporary file of the store, bounded by the expected size,
and enter the store only once their sha256 matches the oid. Credentials come from the URL or
`git credential fill` (asked on the first HTTP 401, approved once they work, rejected when
refused); they are sent only to the endpoint's own scheme, host and port, redirects to any
other origin are refused, and no message ever contains them.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

from git_theta import git
from git_theta.errors import GitError, GitThetaError, TransferError
from git_theta.store import OID_RE, Store
from git_theta.transfer import endpoint as endpoints
from git_theta.transfer.base import (
    Connection,
    ObjectRef,
    Progress,
    ProgressCounter,
    Remote,
    Transfer,
    TransferOptions,
    TransferStats,
    describe,
    local_path,
    no_progress,
    redact,
)

LFS_JSON = "application/vnd.git-lfs+json"
BATCH_SIZE = 100
MAX_JSON_REPLY = 16 << 20  # a batch reply for 100 objects is a few tens of KB
MAX_REDIRECTS = 3
CHUNK = 1 << 20
T = TypeVar("T")


class LfsTransfer(Transfer):
    """Git LFS servers: any remote with an LFS URL configured, or a network remote."""

    name = "lfs"
    priority = 10

    def accepts(self, remote: Remote) -> bool:
        if endpoints.configured_url(remote) is not None:
            return True
        return local_path(remote.url, remote.repo) is None

    def connect(self, remote: Remote, options: TransferOptions) -> Connection:
        return LfsConnection(remote, options)


class _Retryable(Exception):
    """A failure worth another attempt (network, 5xx, 429, short body)."""

    def __init__(self, detail: str, wait: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.wait = wait


class _Failed(Exception):
    """A failure of one object or request that retrying will not fix."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    port = p.port or {"http": 80, "https": 443}.get(p.scheme)
    return p.scheme, (p.hostname or "").lower(), port


class LfsConnection(Connection):
    def __init__(self, remote: Remote, options: TransferOptions) -> None:
        import requests  # imported here: only transfers pay for it

        self.remote = remote
        self.options = options
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "git-theta"
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=max(4, options.workers), max_retries=0
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._endpoints: dict[str, endpoints.Endpoint] = {}
        self._auth: tuple[str, str] | None = None
        self._auth_from_helper = False
        self._auth_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    # -- endpoint and credentials -------------------------------------------------------------

    def _endpoint(self, operation: str) -> endpoints.Endpoint:
        if operation not in self._endpoints:
            ep = endpoints.resolve(self.remote, operation)
            self._endpoints[operation] = ep
            if ep.username is not None and ep.password is not None and self._auth is None:
                self._auth = (ep.username, ep.password)
        return self._endpoints[operation]

    def _credential_fields(self, url: str) -> dict[str, str]:
        p = urlsplit(url)
        host = p.hostname or ""
        if p.port:
            host += f":{p.port}"
        fields = {"protocol": p.scheme, "host": host}
        if git.config_get("credential.useHttpPath", cwd=self.remote.repo) == "true":
            fields["path"] = p.path.lstrip("/")
        ep = next(iter(self._endpoints.values()), None)
        if ep is not None and ep.username:
            fields["username"] = ep.username
        return fields

    def _fill_credentials(self, url: str, tried: tuple[str, str] | None) -> bool:
        """Ask `git credential fill` for new credentials; False if none are to be had."""
        with self._auth_lock:
            if self._auth is not None and self._auth != tried:
                return True  # another thread already got fresh ones
            if tried is not None and self._auth_from_helper:
                self._reject(url)
                return False
            try:
                answer = git.credential("fill", self._credential_fields(url), cwd=self.remote.repo)
            except GitError:
                return False
            if "username" not in answer or "password" not in answer:
                return False
            self._auth = (answer["username"], answer["password"])
            self._auth_from_helper = True
            return True

    def _approve(self, url: str) -> None:
        with self._auth_lock:
            if self._auth_from_helper and self._auth is not None:
                fields = self._credential_fields(url)
                fields.update(username=self._auth[0], password=self._auth[1])
                with contextlib.suppress(GitError):
                    git.credential("approve", fields, cwd=self.remote.repo)
                self._auth_from_helper = False  # approved once is enough

    def _reject(self, url: str) -> None:
        if self._auth is not None:
            fields = self._credential_fields(url)
            fields.update(username=self._auth[0], password=self._auth[1])
            with contextlib.suppress(GitError):
                git.credential("reject", fields, cwd=self.remote.repo)
        self._auth = None

    # -- one HTTP request ---------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Callable[[], Any] | None = None,
        *,
        auth_origin: str,
    ) -> Any:
        """One request (redirects within the same origin followed, 401 answered with
        credentials when the request goes to `auth_origin`); the streaming response on 2xx.

        Raises _Retryable for transient failures and _Failed for the rest.
        """
        import requests

        sent_auth: tuple[str, str] | None = None
        for _ in range(MAX_REDIRECTS + 3):
            same = _origin(url) == _origin(auth_origin)
            has_auth_header = any(k.lower() == "authorization" for k in headers)
            sent_auth = self._auth if same and not has_auth_header else None
            data = body() if body is not None else None
            try:
                resp = self.session.request(
                    method,
                    url,
                    headers=dict(headers),
                    data=data,
                    auth=sent_auth,
                    timeout=(self.options.timeout, self.options.timeout),
                    allow_redirects=False,
                    stream=True,
                )
            except requests.exceptions.Timeout:
                raise _Retryable(f"timed out after {self.options.timeout:g} s") from None
            except requests.exceptions.RequestException as exc:
                raise _Retryable(f"connection failed ({type(exc).__name__})") from None
            finally:
                if isinstance(data, _CountingFile):
                    data.close()
            status = resp.status_code
            if isinstance(data, _CountingFile) and not 200 <= status < 300:
                data.rewind()
            if status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                target = urljoin(url, resp.headers["Location"])
                resp.close()
                if _origin(target) != _origin(url):
                    raise _Failed(
                        f"{redact(url)} redirected to another host ({redact(target)}); "
                        "refusing to follow",
                        status,
                    )
                if status == 303:
                    method, body = "GET", None
                url = target
                continue
            if status == 401 and same and not has_auth_header:
                resp.close()
                if self._fill_credentials(url, sent_auth):
                    continue
                raise _Failed(
                    f"{redact(url)} requires credentials and none were accepted",
                    status,
                )
            if status == 429 or status >= 500:
                wait = _retry_after(resp.headers.get("Retry-After"))
                detail = f"{redact(url)} answered HTTP {status}{_server_message(resp)}"
                resp.close()
                raise _Retryable(detail, wait)
            if status >= 400:
                detail = f"{redact(url)} answered HTTP {status}{_server_message(resp)}"
                resp.close()
                raise _Failed(detail, status)
            if status >= 300:
                resp.close()
                raise _Failed(f"{redact(url)} answered HTTP {status} without a location", status)
            if sent_auth is not None:
                self._approve(url)
            return resp
        raise _Failed(f"{redact(url)}: too many redirects")

    def _retrying(self, fn: Callable[[], T]) -> T:
        delay = self.options.backoff
        attempts = self.options.retries + 1
        for attempt in range(attempts):
            try:
                return fn()
            except _Retryable as exc:
                if attempt == attempts - 1:
                    raise _Failed(f"{exc.detail} (gave up after {attempts} attempts)") from None
                wait = exc.wait if exc.wait is not None else delay
                time.sleep(min(wait, self.options.backoff_max) * (1 + 0.1 * random.random()))
                delay *= 2
        raise AssertionError("unreachable")

    # -- the batch API ------------------------------------------------------------------------

    def _batch(self, operation: str, objects: Sequence[ObjectRef]) -> dict[str, dict[str, Any]]:
        """The server's answer for each requested oid (validated), keyed by oid."""
        ep = self._endpoint(operation)
        url = ep.url + "/objects/batch"
        payload = json.dumps(
            {
                "operation": operation,
                "transfers": ["basic"],
                "objects": [{"oid": o.oid, "size": o.size or 0} for o in objects],
                "hash_algo": "sha256",
            }
        ).encode()
        headers = {**ep.headers, "Accept": LFS_JSON, "Content-Type": LFS_JSON}

        def attempt() -> Any:
            resp = self._send("POST", url, headers, lambda: payload, auth_origin=ep.url)
            try:
                return _read_json(resp, url)
            finally:
                resp.close()

        try:
            reply = self._retrying(attempt)
        except _Failed as exc:
            if exc.status == 404 and operation == "download":
                # giftless (and others) answer 404 for a batch of only unknown objects
                msg = "the batch request answered HTTP 404; or is the LFS URL wrong?"
                return {o.oid: {"error": {"code": 404, "message": msg}} for o in objects}
            raise self._error(f"batch {operation} request failed: {exc.detail}", objects) from None
        return _validate_batch(reply, objects, url)

    def _error(self, detail: str, objects: Sequence[ObjectRef]) -> TransferError:
        oids = [o.oid for o in objects]
        return TransferError(
            f"remote {self.remote.label}: {detail}; objects: {describe(oids)}",
            hint="check the server and your access, then retry (`git theta push` / "
            "`git theta fetch`)",
        )

    # -- transfers ----------------------------------------------------------------------------

    def upload(
        self, store: Store, objects: Sequence[ObjectRef], progress: Progress = no_progress
    ) -> TransferStats:
        refs = []
        for o in _unique(objects):
            size = store.path(o.oid).stat().st_size if store.has(o.oid) else o.size
            refs.append(ObjectRef(o.oid, size))
        stats = TransferStats()
        counter = ProgressCounter(refs, progress)
        stats_lock = threading.Lock()
        absent: list[str] = []
        failed: dict[str, str] = {}

        def one(job: tuple[ObjectRef, Mapping[str, Any]]) -> None:
            ref, actions = job
            self._upload_one(store, ref, actions, counter)
            with stats_lock:
                stats.objects += 1
                stats.bytes += ref.size or 0

        def plan(chunk: Sequence[ObjectRef]) -> list[tuple[ObjectRef, Mapping[str, Any]]]:
            answers = self._batch("upload", chunk)
            jobs = []
            for ref in chunk:
                answer = answers[ref.oid]
                if "error" in answer:
                    failed[ref.oid] = _object_error(answer)
                elif "upload" not in answer.get("actions", {}):
                    stats.skipped += 1
                    counter.add_bytes(ref.size or 0)
                    counter.finish_object()
                elif not store.has(ref.oid):
                    absent.append(ref.oid)
                else:
                    jobs.append((ref, answer["actions"]))
            return jobs

        for chunk in _chunks(refs, BATCH_SIZE):
            failed.update(self._run_chunk(chunk, plan, one))
        if absent:
            raise TransferError(
                f"remote {self.remote.label} lacks objects that are not in the local store "
                f"either: {describe(absent)}",
                hint="run `git theta fetch` from a remote that has them, then push again",
            )
        if failed:
            raise self._object_errors("upload", failed)
        return stats

    def _upload_one(
        self,
        store: Store,
        ref: ObjectRef,
        actions: Mapping[str, Any],
        counter: ProgressCounter,
    ) -> None:
        action = actions["upload"]
        path = store.path(ref.oid)
        size = path.stat().st_size
        if _file_sha256(path) != ref.oid:  # never spread a damaged object
            raise _Failed("the local copy is corrupt; run `git theta fsck`")
        headers = {
            **action["header"],
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        }

        def body() -> _CountingFile:
            return _CountingFile(path, size, counter)

        def attempt() -> None:
            resp = self._send("PUT", action["href"], headers, body, auth_origin=self._ep_url())
            resp.close()

        self._retrying(attempt)
        if "verify" in actions:
            verify = actions["verify"]
            payload = json.dumps({"oid": ref.oid, "size": size}).encode()
            vheaders = {**verify["header"], "Accept": LFS_JSON, "Content-Type": LFS_JSON}

            def check() -> None:
                resp = self._send(
                    "POST", verify["href"], vheaders, lambda: payload, auth_origin=self._ep_url()
                )
                resp.close()

            self._retrying(check)
        counter.finish_object()

    def _ep_url(self) -> str:
        return next(iter(self._endpoints.values())).url

    def download(
        self, store: Store, objects: Sequence[ObjectRef], progress: Progress = no_progress
    ) -> TransferStats:
        stats = TransferStats()
        wanted = []
        for o in _unique(objects):
            if store.has(o.oid):
                stats.skipped += 1
            else:
                wanted.append(o)
        counter = ProgressCounter(wanted, progress)
        failed: dict[str, str] = {}
        stats_lock = threading.Lock()

        def one(job: tuple[ObjectRef, Mapping[str, Any]]) -> None:
            ref, actions = job
            n = self._download_one(store, ref, actions["download"], counter)
            with stats_lock:
                stats.objects += 1
                stats.bytes += n

        def plan(chunk: Sequence[ObjectRef]) -> list[tuple[ObjectRef, Mapping[str, Any]]]:
            answers = self._batch("download", chunk)
            jobs = []
            for ref in chunk:
                answer = answers[ref.oid]
                if "error" in answer:
                    failed[ref.oid] = _object_error(answer)
                elif "download" not in answer.get("actions", {}):
                    failed[ref.oid] = "the server gave no download action"
                else:
                    jobs.append((ref, answer["actions"]))
            return jobs

        for chunk in _chunks(wanted, BATCH_SIZE):
            failed.update(self._run_chunk(chunk, plan, one))
        if failed:
            raise self._object_errors("download", failed)
        return stats

    def _download_one(
        self, store: Store, ref: ObjectRef, action: Mapping[str, Any], counter: ProgressCounter
    ) -> int:
        import hashlib

        import requests

        store.tmp.mkdir(parents=True, exist_ok=True)
        limit = ref.size if ref.size else None

        def attempt() -> Path:
            resp = self._send("GET", action["href"], action["header"], auth_origin=self._ep_url())
            fd, name = tempfile.mkstemp(dir=store.tmp, prefix="dl-")
            tmp = Path(name)
            got = 0
            h = hashlib.sha256()
            try:
                with os.fdopen(fd, "wb") as f:
                    for chunk in resp.iter_content(CHUNK):
                        got += len(chunk)
                        if limit is not None and got > limit:
                            raise _Failed(f"sent more than the {limit} bytes of the object")
                        h.update(chunk)
                        f.write(chunk)
                        counter.add_bytes(len(chunk))
                if limit is not None and got != limit:
                    raise _Retryable(f"body ended after {got} of {limit} bytes")
                if h.hexdigest() != ref.oid:
                    raise _Failed(f"sent content whose sha256 is {h.hexdigest()[:12]}")
                return tmp
            except requests.exceptions.RequestException as exc:
                tmp.unlink(missing_ok=True)
                counter.add_bytes(-got)
                raise _Retryable(
                    f"body ended early after {got} bytes ({type(exc).__name__})"
                ) from None
            except (_Retryable, _Failed, OSError):
                tmp.unlink(missing_ok=True)
                counter.add_bytes(-got)
                raise
            finally:
                resp.close()

        tmp = self._retrying(attempt)
        try:
            obj = store.put_file(tmp, ref.oid)  # checks the hash once more, then publishes
        finally:
            tmp.unlink(missing_ok=True)
        counter.finish_object()
        return obj.size

    def _run_chunk(
        self,
        chunk: Sequence[ObjectRef],
        plan: Callable[[Sequence[ObjectRef]], list[tuple[ObjectRef, Mapping[str, Any]]]],
        fn: Callable[[tuple[ObjectRef, Mapping[str, Any]]], None],
    ) -> dict[str, str]:
        """Batch `chunk` and transfer it right away (signed action URLs stay fresh); objects
        whose action was refused with 401/403 (an expired URL) are batched once more."""
        failed, expired = self._run(fn, plan(chunk))
        if expired:
            for oid in expired:
                failed.pop(oid, None)
            again, _ = self._run(fn, plan([r for r in chunk if r.oid in expired]))
            failed.update(again)
        return failed

    def _run(
        self, fn: Callable[[tuple[ObjectRef, Mapping[str, Any]]], None], jobs: list[Any]
    ) -> tuple[dict[str, str], set[str]]:
        """Run `fn` over the jobs on a pool: oid -> reason for every job that failed, and the
        oids whose failure was HTTP 401/403 on an action (worth a fresh batch)."""
        failed: dict[str, str] = {}
        expired: set[str] = set()
        if not jobs:
            return failed, expired
        with ThreadPoolExecutor(
            max_workers=min(self.options.workers, len(jobs)), thread_name_prefix="git-theta-lfs"
        ) as ex:
            futures = {ex.submit(fn, job): job[0].oid for job in jobs}
            for fut, oid in futures.items():
                try:
                    fut.result()
                except _Failed as exc:
                    failed[oid] = exc.detail
                    if exc.status in (401, 403):
                        expired.add(oid)
                except GitThetaError as exc:
                    failed[oid] = str(exc)
                except OSError as exc:
                    failed[oid] = f"local file error: {exc.strerror or exc}"
        return failed, expired

    def _object_errors(self, verb: str, failed: Mapping[str, str]) -> TransferError:
        oids = sorted(failed)
        first = failed[oids[0]]
        more = f" (and {len(oids) - 1} more objects)" if len(oids) > 1 else ""
        command = "push" if verb == "upload" else "fetch"
        return TransferError(
            f"remote {self.remote.label}: could not {verb} object {oids[0][:12]}: {first}{more}; "
            f"objects: {describe(oids)}",
            hint=f"nothing partial was kept; retry with `git theta {command}`",
        )


# -- helpers -----------------------------------------------------------------------------------


class _CountingFile:
    """An object file for an upload body: a known length (so the request carries
    Content-Length, not chunked encoding) and progress counted as it is read."""

    def __init__(self, path: Path, size: int, counter: ProgressCounter) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._path = path
        self._size = size
        self._counter = counter
        self._sent = 0

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n if n and n > 0 else CHUNK)
        self._sent += len(data)
        self._counter.add_bytes(len(data))
        return data

    def rewind(self) -> None:
        """Take back the progress of a failed attempt."""
        self._counter.add_bytes(-self._sent)
        self._sent = 0

    def close(self) -> None:
        if self._sent < self._size and not self._f.closed:
            self.rewind()  # the request died mid-body
        self._f.close()


def _unique(objects: Sequence[ObjectRef]) -> list[ObjectRef]:
    seen: dict[str, ObjectRef] = {}
    for o in objects:
        if o.oid not in seen or (seen[o.oid].size is None and o.size is not None):
            seen[o.oid] = o
    return sorted(seen.values(), key=lambda o: o.oid)


def _file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _chunks(items: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


def _server_message(resp: Any) -> str:
    """`: <message>` from an LFS JSON error body (bounded, single line), else empty."""
    try:
        raw = resp.raw.read(4096, decode_content=True)
        msg = json.loads(raw).get("message")
    except Exception:
        return ""
    if not isinstance(msg, str):
        return ""
    msg = " ".join(msg.split())[:200]
    return f": {msg}" if msg else ""


def _read_json(resp: Any, url: str) -> Any:
    import requests

    buf = bytearray()
    try:
        for chunk in resp.iter_content(65536):
            buf += chunk
            if len(buf) > MAX_JSON_REPLY:
                raise _Failed(f"{redact(url)} sent a reply larger than {MAX_JSON_REPLY} bytes")
    except requests.exceptions.RequestException as exc:
        raise _Retryable(f"reply interrupted ({type(exc).__name__})") from None
    try:
        return json.loads(bytes(buf))
    except ValueError:
        raise _Failed(f"{redact(url)} sent a reply that is not JSON") from None


def _validate_batch(
    reply: Any, objects: Sequence[ObjectRef], url: str
) -> dict[str, dict[str, Any]]:
    """Every requested oid mapped to a checked answer; hostile shapes are refused."""

    def bad(detail: str) -> TransferError:
        return TransferError(f"{redact(url)} sent a malformed batch reply: {detail}")

    if not isinstance(reply, dict) or not isinstance(reply.get("objects"), list):
        raise bad("no object list")
    transfer = reply.get("transfer", "basic")
    if transfer != "basic":
        raise bad(f"transfer adapter {transfer!r} is not 'basic'")
    wanted = {o.oid for o in objects}
    answers: dict[str, dict[str, Any]] = {}
    for item in reply["objects"]:
        if not isinstance(item, dict) or not isinstance(item.get("oid"), str):
            raise bad("an object without an oid")
        oid = item["oid"]
        if not OID_RE.match(oid) or oid not in wanted:
            continue  # never act on objects we did not ask for
        if isinstance(item.get("error"), dict):
            answers[oid] = {"error": item["error"]}
            continue
        actions = item.get("actions") or {}
        if not isinstance(actions, dict):
            raise bad(f"actions of {oid[:12]} are not an object")
        checked = {}
        for name in ("upload", "download", "verify"):
            if name in actions:
                checked[name] = _validate_action(actions[name], oid, bad)
        answers[oid] = {"actions": checked}
    for oid in wanted - set(answers):
        answers[oid] = {"error": {"code": 404, "message": "the server did not answer for it"}}
    return answers


def _validate_action(action: Any, oid: str, bad: Callable[[str], TransferError]) -> dict[str, Any]:
    if not isinstance(action, dict) or not isinstance(action.get("href"), str):
        raise bad(f"an action of {oid[:12]} has no href")
    href = action["href"]
    if urlsplit(href).scheme not in ("http", "https"):
        raise bad(f"an action of {oid[:12]} is not an http(s) URL")
    header = action.get("header") or {}
    if not isinstance(header, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in header.items()
    ):
        raise bad(f"the headers of an action of {oid[:12]} are not strings")
    return {"href": href, "header": header}


def _object_error(answer: Mapping[str, Any]) -> str:
    err = answer["error"]
    code = err.get("code")
    msg = err.get("message")
    text = " ".join(str(msg).split())[:200] if isinstance(msg, str) else ""
    if code == 404:
        return "the server does not have it" + (f" ({text})" if text else "")
    return f"the server refused it (code {code}{': ' + text if text else ''})"
