package qupath.lib.objects.classes

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.objects.classes.PathClass: one instance per name. */
class PathClass {
    private static final Map<String, PathClass> CLASSES = [:]
    final String name
    final Integer color

    private PathClass(String name, Integer color) {
        this.name = name
        this.color = color
    }

    static synchronized PathClass fromString(String name, Integer rgb = null) {
        return CLASSES.computeIfAbsent(name) { new PathClass(name, rgb) }
    }

    String getName() { name }

    Integer getColor() { color }

    @Override
    String toString() { name }
}
