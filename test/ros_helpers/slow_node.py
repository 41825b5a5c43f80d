"""Test-only occupancy node whose pipeline takes 60 s per camera set (stands in for a long native
inference call), to test that shutdown abandons the set in progress instead of awaiting it."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))      # test/ for fakes.py

from fakes import FakePipeline  # noqa: E402

from occ_ros.core.frames import FrameSet  # noqa: E402
from occ_ros.pipeline import PipelineResult  # noqa: E402
from occ_ros.ros.main import main  # noqa: E402


class SlowPipeline(FakePipeline):
    def run(self, frames: FrameSet) -> PipelineResult:
        print('slow_node: inference started', flush=True)
        end = time.monotonic() + 60.0
        while time.monotonic() < end:          # busy, like a native call that holds its thread
            sum(range(10_000))
        return super().run(frames)


def factory(params: Any, rig: Any, progress: Any) -> SlowPipeline:
    return SlowPipeline(rig)


if __name__ == '__main__':
    sys.exit(main(sys.argv, pipeline_factory=factory))
