"""The glimpse sensor's limits, defined in csrc/checks.h (kMaxImageSide, kMaxPatchSide, kMaxScales) and repeated
here for the numpy reference and the metadata check, which run without the extension and without importing numpy;
tests/test_sensor.py checks them against the extension."""

MAX_IMAGE_SIDE = 1 << 28
MAX_PATCH_SIDE = 1 << 24
MAX_SCALES = 64  # s >= 2 reaches the patch limit by 24 scales; s = 1 only repeats
