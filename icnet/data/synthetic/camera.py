"""The pinhole camera: 1.5 m above a flat ground, looking down the street.

Image coordinates are normalized (image width = image height = 1), so one scene projects to
the same picture at every resolution; `Camera` turns them into pixels of one image size.
"""

from __future__ import annotations

from dataclasses import dataclass

# Camera: normalized focal lengths (image width = image height = 1); square pixels at H:W = 1:2.
FOCAL_U = 0.75
FOCAL_V = 1.5
CAMERA_HEIGHT = 1.5


@dataclass(frozen=True)
class Camera:
    """Projects world points (metres) to pixel coordinates of a height x width image."""

    u_vp: float
    v_h: float
    height: int
    width: int

    def point(self, x: float, y: float, z: float) -> tuple[float, float]:
        return ((self.u_vp + FOCAL_U * x / z) * self.width - 0.5,
                (self.v_h + FOCAL_V * (CAMERA_HEIGHT - y) / z) * self.height - 0.5)

    def pixels(self, metres: float, z: float) -> float:
        """The horizontal size in pixels of `metres` at depth z."""
        return FOCAL_U * metres / z * self.width

    def stroke(self, metres: float, z: float) -> int:
        """A line width in whole pixels (at least 1) for `metres` at depth z."""
        return max(1, round(self.pixels(metres, z)))
