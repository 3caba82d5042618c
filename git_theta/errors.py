"""The one exception tree of git-theta: every expected failure is a GitThetaError."""

from __future__ import annotations


class GitThetaError(Exception):
    """Base class. `str()` is a one-line message that names what failed and the fix."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


class PluginNotFoundError(GitThetaError):
    """A plugin name that no installed entry point provides."""

    def __init__(self, group: str, name: str, available: list[str]) -> None:
        self.group = group
        self.name = name
        self.available = available
        super().__init__(
            f"no {group} plugin named {name!r}",
            hint=f"installed: {', '.join(sorted(available)) or 'none'}",
        )


class CheckpointError(GitThetaError):
    """A checkpoint file that cannot be read: unknown format, truncated, corrupt, hostile."""

    def __init__(self, path: str | None, detail: str, *, hint: str | None = None) -> None:
        self.path = path
        self.detail = detail
        where = path if path else "checkpoint"
        super().__init__(f"{where}: {detail}", hint=hint)


class UnknownFormatError(CheckpointError):
    """The content matches no installed checkpoint format."""


class ManifestError(GitThetaError):
    """Text that should be a git-theta manifest but is malformed."""

    def __init__(self, path: str | None, detail: str, *, line: int | None = None) -> None:
        self.path = path
        self.detail = detail
        self.line = line
        where = path or "manifest"
        at = f" (line {line})" if line is not None else ""
        super().__init__(
            f"{where}: malformed git-theta manifest{at}: {detail}",
            hint="check out a good version of the file, or `git theta fsck`",
        )


class ObjectError(GitThetaError):
    """A problem with one object of the store."""

    def __init__(
        self,
        oid: str,
        detail: str,
        *,
        param: str | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.oid = oid
        self.param = param
        self.path = path
        self.detail = detail
        parts = []
        if path:
            parts.append(path)
        if param:
            parts.append(f"parameter {param}")
        where = ": ".join(parts)
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}object {oid[:12]} {detail}", hint=hint)


class ObjectMissingError(ObjectError):
    def __init__(self, oid: str, *, param: str | None = None, path: str | None = None) -> None:
        super().__init__(
            oid,
            "is missing from the local store",
            param=param,
            path=path,
            hint="run `git theta fetch` to download it from the remote",
        )


class ObjectCorruptError(ObjectError):
    def __init__(
        self, oid: str, detail: str, *, param: str | None = None, path: str | None = None
    ) -> None:
        self.reason = detail
        super().__init__(
            oid,
            f"is corrupt ({detail})",
            param=param,
            path=path,
            hint="remove it and run `git theta fetch` to download a good copy; `git theta fsck` "
            "lists every damaged object",
        )


class StoreWriteError(GitThetaError):
    """The store could not be written (disk full, permissions); nothing was published."""

    def __init__(self, where: str, exc: OSError) -> None:
        self.where = where
        self.errno = exc.errno
        reason = exc.strerror or str(exc)
        super().__init__(
            f"cannot write to the git-theta store at {where}: {reason}",
            hint="free some space (or fix permissions) and run the command again; "
            "nothing was changed",
        )


class GitError(GitThetaError):
    """A git command that failed."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        self.args_ = args
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        super().__init__(f"`git {' '.join(args)}` failed (exit {returncode}): {tail}")


class NotARepositoryError(GitThetaError):
    def __init__(self, where: str) -> None:
        super().__init__(f"{where} is not inside a git repository", hint="run `git init` first")


class UpdateError(GitThetaError):
    """An update (patch) file or record that cannot be applied."""


class MergeError(GitThetaError):
    """A merge that cannot be completed as asked."""


class MergeConflictError(MergeError):
    """Parameters changed differently on both sides, and nothing chose how to merge them."""

    def __init__(self, path: str, params: list[str], *, aborted: bool = False) -> None:
        self.path = path
        self.params = params
        shown = ", ".join(params[:20]) + (
            f" (and {len(params) - 20} more)" if len(params) > 20 else ""
        )
        why = "merge aborted" if aborted else "no merge strategy chosen"
        super().__init__(
            f"{path}: {why} for {len(params)} conflicting parameter(s): {shown}",
            hint=f"resolve with `git theta resolve {path} --strategy NAME` (e.g. average), "
            f"or export the three versions with `git theta resolve {path} --export DIR`",
        )


class TransferError(GitThetaError):
    """Moving objects to or from a remote failed."""
