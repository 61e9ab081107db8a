"""A raw recording's frames as model inputs, one at a time: what ``ScanStream`` is for prepared scans.

Same interface (``scene``, ``records``, ``batch(record)``, ``frame_step``, ``clip_source``,
``len()``), so ``OnlineSegmenter`` runs it unchanged. A frame becomes exactly the input its
prepared MV frame would be: ``frame_sample`` samples it as ``prepare`` does (labels 0: a raw
recording has no mesh), the CLIP encoder sees it through prepare's JPEG, and the dataset's own
``sample_item`` + ``collate`` build the batch. Frames are read as the segmenter asks for the next
record (charged to the ``load`` stage); a frame that gives no sample (no valid pose, no depth in
range) is skipped and counted, so ``records`` yields streamed frames only and ``len()`` counts
them. Nothing of a frame is kept once its batch is built, so memory does not grow with the
recording's length.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..data.labels import LabelSet
from ..data.loading.batch import Batch, collate
from ..data.loading.dataset import sample_item
from ..data.prepare.frame_sample import FrameSampling, clip_image, observe_frame, unlabelled_sample
from ..data.prepare.superpoints import superpoint_method
from ..data.raw.recording import Recording
from ..errors import BifusionError
from ..reporting import NULL_REPORTER, Reporter
from .timing import StageClock

ONLINE_SUPERPOINTS = "image"  # the one method that needs nothing but the frame


@dataclass
class RawFrame:
    """One streamed frame: its sample (prepared-format arrays) and the image CLIP sees."""

    frame: int
    key: str  # <recording>/<frame:06d>, like a prepared frame's key
    sample: dict[str, np.ndarray]
    image: np.ndarray | None  # None when the model has no 2D branch


class RecordingStream:
    def __init__(
        self,
        recording: Recording,
        labels: LabelSet,
        voxel_size: float,
        sampling: FrameSampling,
        clip_source: Any = None,
        clock: StageClock | None = None,
        reporter: Reporter = NULL_REPORTER,
    ):
        self.recording = recording
        self.scene = recording.name
        self.frame_step = recording.frame_step
        self.labels, self.voxel_size, self.sampling = labels, voxel_size, sampling
        self.clip_source = clip_source
        self.clock, self.reporter = clock, reporter
        self.method = superpoint_method(ONLINE_SUPERPOINTS)
        self.streamed = 0
        self.skipped: Counter[str] = Counter()  # reason -> frames

    def __len__(self) -> int:
        return self.streamed

    @property
    def records(self) -> Iterator[RawFrame]:
        """The usable frames, oldest first; the recording is refused when none is usable."""
        for frame in self.recording.frames:
            with self._load():
                record = self.read(frame)
            if record is None:
                self.reporter.advance("frames")  # the segmenter advances for streamed frames only
                continue
            self.streamed += 1
            yield record
        if not self.streamed:
            reasons = ", ".join(f"{n} × {reason}" for reason, n in self.skipped.most_common())
            raise BifusionError(self.recording.path, f"no usable frame among the {len(self.recording.frames)} chosen: {reasons}")

    def read(self, frame: int) -> RawFrame | None:
        """The frame's record, or None (counted in ``skipped``) when it gives no sample."""
        observed = observe_frame(self.recording.source, frame, self.scene, self.sampling)
        if isinstance(observed, str):
            self.skipped[observed] += 1
            return None
        image = clip_image(observed.image) if self.clip_source is not None else None
        return RawFrame(frame, f"{self.scene}/{frame:06d}", unlabelled_sample(observed, self.method), image)

    def batch(self, record: RawFrame) -> Batch:
        item = sample_item(
            [record.sample], [record.key], [record.image], record.key, self.labels, self.voxel_size, None, self.clip_source
        )
        return collate([item])

    def _load(self) -> contextlib.AbstractContextManager:
        return self.clock.measure("load") if self.clock is not None else contextlib.nullcontext()
