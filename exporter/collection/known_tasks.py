"""The tasks a fetch need not decode: the key (the hash of its JSON) of each task held.

The gateway client decodes only the tasks whose key it does not find here (see
:func:`exporter.gateway.answers.decode_tasks`); a task that comes back byte for byte as
held is answered as known, and the store takes the task it holds. A full sync of a
window that did not change then costs its requests and a hash per task, not a decoding
of the whole window.
"""


class KnownTasks:
    """The key of each task held by TaskId, and the TaskId of each key."""

    def __init__(self) -> None:
        self.by_key: dict[int, str] = {}  # what a fetch is handed as ``known``
        self._key_of: dict[str, int] = {}

    def copy(self) -> "KnownTasks":
        """An independent copy."""
        clone = KnownTasks()
        clone.by_key = dict(self.by_key)
        clone._key_of = dict(self._key_of)
        return clone

    def remember(self, task_id: str, key: int) -> None:
        """Hold ``key`` as the latest key of ``task_id`` (0, or a key not set: nothing)."""
        if not key or type(key) is not int or self._key_of.get(task_id) == key:
            return
        self.forget(task_id)
        self.by_key[key] = task_id
        self._key_of[task_id] = key

    def forget(self, task_id: str) -> None:
        """The task is no longer held: its key no longer finds it."""
        key = self._key_of.pop(task_id, None)
        if key is not None and self.by_key.get(key) == task_id:
            del self.by_key[key]

    def keep_only(self, held: set[str]) -> None:
        """Forget every task but those ``held``."""
        self._key_of = {task_id: key for task_id, key in self._key_of.items() if task_id in held}
        self.by_key = {key: task_id for task_id, key in self._key_of.items()}
