package qupath.lib.objects

/**
 * TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.objects.PathROIObject,
 * the parent of annotations and detections. As in QuPath, it overrides PathObject's locking with a
 * flag that can be set and cleared (setLocked/isLocked).
 */
abstract class PathROIObject extends PathObject {
    private boolean lockedROI = false

    @Override
    void setLocked(boolean locked) { this.lockedROI = locked }

    @Override
    boolean isLocked() { lockedROI }
}
