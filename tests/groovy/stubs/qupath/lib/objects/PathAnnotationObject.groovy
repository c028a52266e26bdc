package qupath.lib.objects

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.objects.PathAnnotationObject. */
class PathAnnotationObject extends PathROIObject {
    @Override
    boolean isAnnotation() { true }
}
