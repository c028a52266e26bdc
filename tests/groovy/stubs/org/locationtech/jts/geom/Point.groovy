package org.locationtech.jts.geom

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for JTS's org.locationtech.jts.geom.Point. */
class Point extends Geometry {
    private final double x, y

    Point(double x, double y) {
        this.x = x
        this.y = y
    }

    double getX() { x }

    double getY() { y }

    @Override
    double getArea() { 0d }

    @Override
    Point getCentroid() { this }
}
