package qupath.lib.roi.interfaces

/**
 * TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's
 * qupath.lib.roi.interfaces.ROI (an interface there), computed from the object's GeoJSON geometry:
 * bounds, area (polygons: outer rings minus holes; other types 0) and the number of vertices.
 */
class ROI {
    private final Map geometry

    ROI(Map geometry) { this.geometry = geometry }

    private List<List<Number>> points() {
        List out = []
        def walk
        walk = { c -> if (c instanceof List && c && c[0] instanceof Number) out << c else if (c instanceof List) c.each { walk(it) } }
        walk(geometry.coordinates)
        return out
    }

    double getBoundsX() { points().collect { it[0] as double }.min() ?: 0d }

    double getBoundsY() { points().collect { it[1] as double }.min() ?: 0d }

    double getBoundsWidth() { def xs = points().collect { it[0] as double }; xs ? xs.max() - xs.min() : 0d }

    double getBoundsHeight() { def ys = points().collect { it[1] as double }; ys ? ys.max() - ys.min() : 0d }

    int getNumPoints() { points().size() }

    double getArea() {
        List polygons = geometry.type == 'Polygon' ? [geometry.coordinates] : geometry.type == 'MultiPolygon' ? geometry.coordinates : []
        return polygons.sum(0d) { List rings ->
            rings.withIndex().sum(0d) { List ring, int i -> (i == 0 ? 1 : -1) * Math.abs(shoelace(ring)) }
        } as double
    }

    private static double shoelace(List ring) {
        double s = 0
        for (int i = 0; i < ring.size() - 1; i++)
            s += (ring[i][0] as double) * (ring[i + 1][1] as double) - (ring[i + 1][0] as double) * (ring[i][1] as double)
        return s / 2
    }
}
