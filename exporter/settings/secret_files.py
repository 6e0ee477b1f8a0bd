"""The API keys from files in a secrets directory, each file checked before it is read.

pydantic's own secrets source would open a file for every setting, block for ever on
a FIFO and print a warning line for a missing directory; this one reads only the key
files, refuses anything but a small regular UTF-8 file, and names the setting and the
file in its errors, never the contents.
"""

import errno
import os
import stat
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from exporter.settings.names import ENV_PREFIX, ConfigError, setting_error, warn

DEFAULT_SECRETS_DIR = Path("/run/secrets")
SECRETS_DIR_VARIABLE = ENV_PREFIX + "SECRETS_DIR"
# The settings read from secrets files, and the files' names, in order of preference.
KEY_FILES = {
    "public_key": (ENV_PREFIX + "PUBLIC_KEY", "UCLOUD_PUBLIC_KEY"),
    "private_key": (ENV_PREFIX + "PRIVATE_KEY", "UCLOUD_PRIVATE_KEY"),
}
# An API key is tens of bytes; a bigger file is a mistake, not a key.
MAX_KEY_FILE_BYTES = 64 * 1024


class KeyFilesSource(PydanticBaseSettingsSource):
    """The API keys from files in the secrets directory, each file checked before it is read.

    Only the files in :data:`KEY_FILES` are looked at. Each must be a regular file (a
    FIFO is never waited on: it is opened non-blocking and refused), readable, at most
    :data:`MAX_KEY_FILE_BYTES` and UTF-8; anything else is a :class:`ConfigError` that
    names the setting and the file, never its contents.
    """

    def __init__(self, settings_cls: type[BaseSettings], directory: Any) -> None:
        """Read from ``directory``; None reads nothing."""
        super().__init__(settings_cls)
        self._directory = Path(directory) if directory is not None else None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` reads every key file at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """The key files' values under their variables' names, unless a flag or variable won."""
        if self._directory is None:
            return {}
        try:
            is_directory = stat.S_ISDIR(self._directory.stat().st_mode)
        except OSError as error:  # Path.is_dir() would raise PermissionError, say, as it is
            problem = "does not exist" if error.errno == errno.ENOENT else _reason(error)
            raise ConfigError(f"invalid setting {SECRETS_DIR_VARIABLE}: {problem}") from None
        if not is_directory:
            raise ConfigError(f"invalid setting {SECRETS_DIR_VARIABLE}: not a directory")
        values: dict[str, Any] = {}
        for field, names in KEY_FILES.items():
            if self._already_set(field, names):
                continue
            for name in names:
                value = _read_key_file(self._directory / name, field, name)
                if value is not None:
                    values[names[0]] = value
                    break
        return values

    def _already_set(self, field: str, names: tuple[str, ...]) -> bool:
        # The environment's UCLOUD_* name would lose to a file's UCDN_EXPORTER_* name at
        # validation (the first alias wins), so a file is read only when nothing else set it.
        return any(key in self.current_state for key in (field, *names))


def _read_key_file(path: Path, field: str, name: str) -> str | None:
    """The stripped text of one key file, None when it does not exist."""
    try:
        text = read_small_text(path, MAX_KEY_FILE_BYTES)
    except UnreadableFileError as problem:
        raise setting_error(field, f"secrets file {name}: {problem}") from None
    if text is not None:
        warn_if_others_can_read(path, "secrets file")
        return text.strip()
    return None


class UnreadableFileError(ValueError):
    """Why a file cannot be read, in a few words that name neither the file nor its content."""


def read_small_text(path: Path, limit: int) -> str | None:
    """The UTF-8 text of a small regular file, None when it does not exist.

    A FIFO or a device is never waited on (the file is opened non-blocking and refused);
    anything but a readable regular file of at most ``limit`` bytes of UTF-8 raises
    :class:`UnreadableFileError`.
    """
    try:
        path.lstat()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UnreadableFileError(_reason(error)) from None
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        problem = "dangling symbolic link" if error.errno == errno.ENOENT else _reason(error)
        raise UnreadableFileError(problem) from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UnreadableFileError("not a regular file")
    with os.fdopen(descriptor, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise UnreadableFileError(f"larger than {limit} bytes")
    try:
        return data.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise UnreadableFileError("not UTF-8 text") from None


def warn_if_others_can_read(path: Path, what: str) -> None:
    """Warn, as ssh does, when a file holding a key can be read by others than the exporter.

    Others means any user (the mode's last digit) or a group other than the exporter's own:
    a Kubernetes Secret mounted 0440 with ``fsGroup`` set to the exporter's group is fine.
    """
    try:
        status = path.stat()
    except OSError:
        return
    others = status.st_mode & stat.S_IROTH
    foreign_group = status.st_mode & stat.S_IRGRP and status.st_gid != os.getegid()
    if others or foreign_group:
        mode = f"{stat.S_IMODE(status.st_mode):04o}"
        warn(f"{what} is readable by others (mode {mode}); chmod 600 it", file=str(path))


def regular_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable regular file, or None when it is one."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        return f"cannot be used ({_reason(error)})"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if not os.access(path, os.R_OK, effective_ids=True):
        return "cannot be read (permission denied)"
    return None


def _reason(error: OSError) -> str:
    # strerror alone: str(error) would repeat the file name.
    return (error.strerror or "cannot be read").lower()


def default_secrets_dir() -> Path | None:
    """The secrets directory: the variable's, else /run/secrets when it exists, else None."""
    configured = os.environ.get(SECRETS_DIR_VARIABLE)
    if configured:
        return Path(configured)
    return DEFAULT_SECRETS_DIR if DEFAULT_SECRETS_DIR.is_dir() else None
