package org.locationtech.jts.geom

/**
 * TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for JTS's
 * org.locationtech.jts.geom.Geometry (abstract there too), the geometry behind a QuPath ROI. Only
 * getArea() and getCentroid(), computed by testdoubles.GeoJsonRoi as JTS does (area-weighted).
 */
abstract class Geometry {
    abstract double getArea()

    abstract Point getCentroid()
}
