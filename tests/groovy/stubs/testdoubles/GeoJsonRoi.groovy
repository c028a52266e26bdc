package testdoubles

import org.locationtech.jts.geom.Geometry
import org.locationtech.jts.geom.Point
import qupath.lib.roi.interfaces.ROI

/**
 * Test helper (not QuPath): a ROI made from a GeoJSON geometry, as QuPath's ROITypeAdapters and
 * GeometryTools.geometryToROI make one: a single polygon without holes becomes a PolygonROI, whose
 * vertices QuPath keeps as 32-bit floats (so they are rounded here too); polygons with holes and
 * multi-polygons keep double coordinates (GeometryROI). Area and centroid follow JTS: shoelace
 * sums per ring, holes subtracted, parts added, the centroid weighted by area.
 */
class GeoJsonRoi implements ROI {
    final Map geoJson
    private final List<List<List<List<Double>>>> polygons  // polygon -> ring -> vertex -> [x, y]

    GeoJsonRoi(Map geoJson) {
        this.geoJson = geoJson
        List coords = (List) geoJson.coordinates
        switch (geoJson.type) {
            case 'Polygon': polygons = [toRings(coords)]; break
            case 'MultiPolygon': polygons = coords.collect { toRings((List) it) }; break
            default: polygons = []
        }
        if (polygons.size() == 1 && polygons[0].size() == 1)  // a PolygonROI: float vertices
            polygons = [[polygons[0][0].collect { p -> p.collect { ((double) (float) it) } }]]
    }

    private static List toRings(List rings) { rings.collect { ring -> ((List) ring).collect { pt -> ((List) pt).collect { ((Number) it).doubleValue() } } } }

    /** [signed area, sum x * cross, sum y * cross] of a closed ring. */
    private static double[] ringSums(List<List<Double>> ring) {
        double a = 0, cx = 0, cy = 0
        for (int i = 0; i < ring.size() - 1; i++) {
            double x0 = ring[i][0], y0 = ring[i][1], x1 = ring[i + 1][0], y1 = ring[i + 1][1]
            double cross = x0 * y1 - x1 * y0
            a += cross
            cx += (x0 + x1) * cross
            cy += (y0 + y1) * cross
        }
        return [a / 2, cx / 6, cy / 6] as double[]
    }

    /** [area, moment x, moment y]: shells counted positive, holes negative, whatever their orientation. */
    private double[] sums() {
        double area = 0, mx = 0, my = 0
        polygons.each { rings ->
            rings.eachWithIndex { ring, k ->
                double[] s = ringSums(ring)
                double sign = (s[0] >= 0 ? 1 : -1) * (k == 0 ? 1 : -1)
                area += sign * s[0]
                mx += sign * s[1]
                my += sign * s[2]
            }
        }
        return [area, mx, my] as double[]
    }

    @Override
    Geometry getGeometry() {
        double[] s = sums()
        return new Geometry() {
            @Override
            double getArea() { s[0] }

            @Override
            Point getCentroid() { new Point(s[1] / s[0], s[2] / s[0]) }
        }
    }

    @Override
    boolean isArea() { !polygons.isEmpty() }

    @Override
    double getArea() { sums()[0] }

    @Override
    double getCentroidX() { getGeometry().getCentroid().getX() }

    @Override
    double getCentroidY() { getGeometry().getCentroid().getY() }

    /** Every vertex [x, y] of the geometry, whatever its type (closing vertices included). */
    private List<List<Double>> points() {
        List out = []
        def walk
        walk = { c -> if (c instanceof List && c && c[0] instanceof Number) out << c.collect { ((Number) it).doubleValue() } else if (c instanceof List) c.each { walk(it) } }
        walk(geoJson.coordinates)
        return out
    }

    @Override
    double getBoundsX() { points().collect { it[0] }.min() ?: 0d }

    @Override
    double getBoundsY() { points().collect { it[1] }.min() ?: 0d }

    @Override
    double getBoundsWidth() { def xs = points().collect { it[0] }; xs ? xs.max() - xs.min() : 0d }

    @Override
    double getBoundsHeight() { def ys = points().collect { it[1] }; ys ? ys.max() - ys.min() : 0d }

    @Override
    int getNumPoints() { points().size() }
}
