package qupath.lib.objects

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.objects.PathDetectionObject. */
class PathDetectionObject extends PathObject {
    @Override
    boolean isDetection() { true }
}
