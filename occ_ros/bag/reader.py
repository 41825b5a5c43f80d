"""Read rosbag2 bags (MCAP or sqlite3) with rosbags: topics, raw and decoded messages, ground truth.

Every failure a user can cause is a `BagError` with the path and what to do: a missing directory
or metadata.yaml, storage files that are missing, corrupt or truncated, and message types that
are neither standard ROS 2 types (the rosbags Kilted typestore) nor the project's own
(occ_ros/msg/*).
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from occ_ros.core.cdr import cdr_header
from occ_ros.core.errors import BagError, ImageError
from occ_ros.core.occupancy import Occupancy, occupancy_from_message
from occ_ros.bag.writer import GT_TOPIC, GT_TYPE, project_typestore


@dataclass(frozen=True)
class TopicSummary:
    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class RawMessage:
    """A message as stored: CDR bytes with its topic, type and bag timestamp (ns)."""

    topic: str
    msgtype: str
    stamp_ns: int
    data: bytes


class BagReader:
    """An open rosbag2 bag. Use as a context manager.

    topics: {topic: TopicSummary}; start_ns / end_ns; raw_messages(), messages() (decoded with
    the typestore: rosbags dataclasses), ground_truth() → {stamp_ns: Occupancy}.
    """

    def __init__(self, path: str | Path, typestore: Any = None) -> None:
        from rosbags.rosbag2 import Reader
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f'bag {self.path} does not exist (expected a rosbag2 directory)')
        if not self.path.is_dir():
            raise BagError(f'bag {self.path} is a file; rosbag2 bags are directories holding '
                           f'metadata.yaml and the storage files')
        if not (self.path / 'metadata.yaml').is_file():
            raise BagError(f'bag {self.path} has no metadata.yaml: not a rosbag2 directory, or an '
                           f'interrupted recording (`ros2 bag reindex` can rebuild it)')
        self.ts = typestore if typestore is not None else project_typestore()
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:             # rosbags raises ReaderError, sqlite3/yaml/OSError errors …
            raise BagError(f'cannot open bag {self.path}: {type(exc).__name__}: {exc}. The storage '
                           f'file is missing, corrupt or truncated.') from exc
        unknown = sorted({(c.topic, c.msgtype) for c in self._reader.connections
                          if c.msgtype not in self.ts.fielddefs})
        if unknown:
            self._reader.close()
            listed = ', '.join(f'{t} ({m})' for t, m in unknown)
            raise BagError(f'bag {self.path} holds unknown message types: {listed}. Only standard '
                           f'ROS 2 types and occ_ros/msg/* can be decoded; drop these topics when '
                           f'recording or convert the bag.')
        self.storage = self._storage_identifier()

    def _storage_identifier(self) -> str:
        import yaml  # type: ignore[import-untyped]
        try:
            doc = yaml.safe_load((self.path / 'metadata.yaml').read_text(encoding='utf-8'))
            return str(doc['rosbag2_bagfile_information']['storage_identifier'])
        except Exception:                    # already validated by rosbags; informative only
            return ''

    # ------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> 'BagReader':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def topics(self) -> dict[str, TopicSummary]:
        out: dict[str, TopicSummary] = {}
        for c in self._reader.connections:
            prev = out.get(c.topic)
            out[c.topic] = TopicSummary(c.topic, c.msgtype, c.msgcount + (prev.count if prev else 0))
        return out

    @property
    def start_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def end_ns(self) -> int:
        return int(self._reader.end_time)

    @property
    def message_count(self) -> int:
        return int(self._reader.message_count)

    @property
    def connections(self) -> list[Any]:
        return list(self._reader.connections)

    def _select(self, topics: Optional[Iterable[str]]) -> list[Any]:
        conns = self._reader.connections
        if topics is None:
            return list(conns)
        want = set(topics)
        missing = want - {c.topic for c in conns}
        if missing:
            raise BagError(f'bag {self.path} has no topic(s) {sorted(missing)}; it has {sorted(self.topics)}')
        return [c for c in conns if c.topic in want]

    def raw_messages(self, topics: Optional[Iterable[str]] = None, start_ns: Optional[int] = None,
                     stop_ns: Optional[int] = None) -> Iterator[RawMessage]:
        """Messages in timestamp order as stored (CDR bytes); with start_ns / stop_ns only those whose
        bag timestamp is in [start_ns, stop_ns) (the storage skips the chunks outside)."""
        conns = self._select(topics)
        it = self._reader.messages(connections=conns, start=start_ns, stop=stop_ns)
        while True:
            try:
                conn, stamp, data = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise BagError(f'bag {self.path} is corrupt or truncated: reading failed with '
                               f'{type(exc).__name__}: {exc}') from exc
            yield RawMessage(conn.topic, conn.msgtype, int(stamp), bytes(data))

    def decode(self, raw: RawMessage) -> Any:
        try:
            return self.ts.deserialize_cdr(raw.data, raw.msgtype)
        except Exception as exc:
            raise BagError(f'bag {self.path}: message on {raw.topic} at {raw.stamp_ns} ns does not '
                           f'decode as {raw.msgtype} ({type(exc).__name__}: {exc}); the bag is corrupt '
                           f'or was written with another definition of the type') from exc

    def messages(self, topics: Optional[Iterable[str]] = None, start_ns: Optional[int] = None,
                 stop_ns: Optional[int] = None) -> Iterator[tuple[RawMessage, Any]]:
        """(raw, decoded) pairs in timestamp order (start_ns / stop_ns: as `raw_messages`)."""
        for raw in self.raw_messages(topics, start_ns, stop_ns):
            yield raw, self.decode(raw)

    def ground_truth(self, topic: str = GT_TOPIC) -> dict[int, Occupancy]:
        """{header stamp ns: Occupancy} of every ground-truth message on `topic`."""
        self._check_ground_truth_topic(topic)
        out: dict[int, Occupancy] = {}
        for _, msg in self.messages([topic]):
            gt = occupancy_from_message(msg)
            out[gt.stamp_ns] = gt
        return out

    def ground_truth_frames(self, topic: str = GT_TOPIC) -> 'GroundTruthFrames':
        """The ground truth of `topic` keyed by header stamp, as `ground_truth()`, but each frame
        decoded when it is first read (a replay scores the few frames the node answered: decoding
        all 72 of the demo's took 0.2 s of CPU). The stamps are read from the messages' headers
        now; the messages are kept serialized until then."""
        self._check_ground_truth_topic(topic)
        raw: dict[int, RawMessage] = {}
        for msg in self.raw_messages([topic]):
            try:
                stamp, _ = cdr_header(msg.data)
            except ImageError as exc:
                raise BagError(f'bag {self.path}: the ground truth at {msg.stamp_ns} ns on {topic} has no '
                               f'readable header ({exc})') from exc
            raw[stamp] = msg
        return GroundTruthFrames(self, raw)

    def _check_ground_truth_topic(self, topic: str) -> None:
        info = self.topics.get(topic)
        if info is None:
            raise BagError(f'bag {self.path} has no ground-truth topic {topic}; topics: {sorted(self.topics)}')
        if info.msgtype != GT_TYPE:
            raise BagError(f'{topic} in {self.path} is {info.msgtype}, expected {GT_TYPE}')


class GroundTruthFrames(Mapping[int, Occupancy]):
    """Ground-truth frames of a bag, {header stamp ns: Occupancy}, each decoded on first access
    (`BagReader.ground_truth_frames`) and kept; needs only the reader's typestore, not the open
    file; safe to read from several threads (the report's pictures). A message that does not
    decode is a `BagError` when it is read."""

    def __init__(self, reader: BagReader, raw: dict[int, RawMessage]) -> None:
        self._reader = reader
        self._raw = raw
        self._decoded: dict[int, Occupancy] = {}
        self._lock = threading.Lock()

    def __getitem__(self, stamp: int) -> Occupancy:
        with self._lock:
            gt = self._decoded.get(stamp)
            if gt is None:
                gt = occupancy_from_message(self._reader.decode(self._raw[stamp]))
                self._decoded[stamp] = gt
                del self._raw[stamp]
            return gt

    def __iter__(self) -> Iterator[int]:
        with self._lock:
            return iter(sorted(self._raw.keys() | self._decoded.keys()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._raw) + len(self._decoded)

    def __contains__(self, stamp: object) -> bool:
        with self._lock:
            return stamp in self._raw or stamp in self._decoded


def read_ground_truth(path: str | Path, topic: str = GT_TOPIC) -> dict[int, Occupancy]:
    """Ground truth of a bag keyed by header stamp (ns)."""
    with BagReader(path) as r:
        return r.ground_truth(topic)


def bag_info(path: str | Path) -> dict[str, Any]:
    """A summary dict: storage, start/end ns, message count, {topic: (type, count)}."""
    with BagReader(path) as r:
        return {'path': str(r.path), 'start_ns': r.start_ns, 'end_ns': r.end_ns,
                'messages': r.message_count,
                'topics': {t: (s.msgtype, s.count) for t, s in sorted(r.topics.items())}}
