package qupath.lib.objects

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.objects.PathDetectionObject. */
class PathDetectionObject extends PathROIObject {
    @Override
    boolean isDetection() { true }
}
