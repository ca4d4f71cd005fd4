"""Writing RGB frames as an MP4, with whichever encoder this machine has.

PyAV bundles its own FFmpeg; mediapy needs an ``ffmpeg`` binary; OpenCV (a nerfstudio dependency) always
exists but writes MPEG-4 part 2 rather than H.264. The first that works wins, so a machine without
PyAV or ffmpeg (such as a bare GPU image) still gets a video.
"""

import os
from pathlib import Path
from typing import List, Optional

import numpy as np


def _write_pyav(frames: List[np.ndarray], path: Path, fps: float) -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=max(1, round(fps)))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_mediapy(frames: List[np.ndarray], path: Path, fps: float) -> None:
    import mediapy

    mediapy.write_video(str(path), frames, fps=fps)


def _write_opencv(frames: List[np.ndarray], path: Path, fps: float) -> None:
    import cv2

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError("OpenCV could not open an mp4v writer")
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()


ENCODERS = (("pyav", _write_pyav), ("mediapy", _write_mediapy), ("opencv", _write_opencv))


def write_video(frames: List[np.ndarray], path: Path, fps: float) -> Optional[str]:
    """Write ``[H, W, 3]`` uint8 frames to ``path`` atomically; returns the encoder used, or None if none worked."""
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    for name, encode in ENCODERS:
        try:
            encode(frames, temporary, fps)
        except Exception:  # noqa: BLE001 - any encoder problem falls through to the next one
            temporary.unlink(missing_ok=True)
            continue
        if temporary.exists() and temporary.stat().st_size > 0:
            os.replace(temporary, path)
            return name
    return None
