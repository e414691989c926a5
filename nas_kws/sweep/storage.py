"""Where a sweep's study lives, through Optuna's own storages, from one laptop to a cluster:

- default: Optuna's journal file in the sweep folder (`JournalFileBackend`, no server; the
  processes of one machine share it through its file lock);
- `--storage URL`: any SQLAlchemy URL (`postgresql://user@host/db`, ...) through `RDBStorage`,
  which every machine of a cluster can reach.

Both send heartbeats: a running trial's worker records one every `heartbeat_interval` seconds,
and a trial silent for `grace_period` seconds (its worker was killed) is failed and re-queued by
Optuna's `RetryHeartbeatStaleTrialCallback` (the former `RetryFailedTrialCallback`) when the
next trial starts. `RDBStorage` has heartbeats built in; Optuna 5.1's `JournalStorage` has none,
so `HeartbeatJournalStorage` adds Optuna's `BaseHeartbeat` interface to it, recording the
heartbeat as a trial system attribute (local clock: the journal file is one machine's).
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from nas_kws.errors import NasKwsError
from nas_kws.sweep.config import StudyConfig

JOURNAL_NAME = "optuna_journal.log"
HEARTBEAT_ATTR = "nas_kws_heartbeat"
StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal storage whose running trials send heartbeats, like `RDBStorage`'s."""

    def __init__(self, backend: JournalFileBackend, heartbeat_interval: int, grace_period: int,
                 stale_callback: StaleCallback | None) -> None:
        super().__init__(backend)
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period
        self._stale_callback = stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:
            pass  # another worker already failed this trial as stale

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [t._trial_id for t in running
                if now - self._last_sign_of_life(t) > self._grace_period]

    @staticmethod
    def _last_sign_of_life(trial: FrozenTrial) -> float:
        """The last heartbeat, or the start for a worker that died before its first one."""
        beat = trial.system_attrs.get(HEARTBEAT_ATTR)
        return beat if beat is not None else trial.datetime_start.timestamp()

    def get_heartbeat_interval(self) -> int:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self._stale_callback


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is shown as given
        return url


def journal_path(folder: Path) -> Path:
    return folder / JOURNAL_NAME


def open_storage(url: str | None, folder: Path, study: StudyConfig) -> BaseStorage:
    """The journal in `folder` (url None) or the database at `url`, both with heartbeats and
    stale trials re-queued up to `study.max_retries` times."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats are "experimental"
        retry = RetryHeartbeatStaleTrialCallback(max_retry=study.max_retries)
        if url is None:
            folder.mkdir(parents=True, exist_ok=True)
            return HeartbeatJournalStorage(JournalFileBackend(str(journal_path(folder))),
                                           study.heartbeat_interval, study.grace_period, retry)
        from sqlalchemy.exc import SQLAlchemyError

        if "://" not in url:
            raise ValueError(f"--storage {url!r}: expected an SQLAlchemy URL such as "
                             "postgresql://user@host:5432/db (without --storage the study is a "
                             "journal file in the sweep folder)")
        try:
            return _rdb_storage(url, study, retry)
        except ImportError as err:
            raise NasKwsError(f"--storage {redact(url)}: the database driver is missing "
                              f"({err.__cause__ or err}); for PostgreSQL: pip install "
                              "'nas-kws[postgres]'") from None
        except SQLAlchemyError as err:  # unreachable, refused, bad credentials, ...
            first = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            raise NasKwsError(f"--storage {redact(url)}: cannot open the database ({first})"
                              ) from None


def _rdb_storage(url: str, study: StudyConfig, retry: StaleCallback,
                 attempts: int = 5) -> RDBStorage:
    """Optuna's RDBStorage. Machines that start together on an empty database race to create
    its tables (a duplicate key or table error for the losers), so they try again."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    def connect() -> RDBStorage:
        return RDBStorage(url, engine_kwargs={"pool_pre_ping": True},
                          heartbeat_interval=study.heartbeat_interval,
                          grace_period=study.grace_period, heartbeat_stale_trial_callback=retry)

    for attempt in range(attempts - 1):
        try:
            return connect()
        except (IntegrityError, ProgrammingError):
            time.sleep(0.5 + attempt)
    return connect()


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's own check, which a worker also runs while it waits for others' trials."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
