package qupath.lib.roi.interfaces

import org.locationtech.jts.geom.Geometry

/**
 * TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's
 * qupath.lib.roi.interfaces.ROI (an interface there too): only the methods the camseg scripts call,
 * with QuPath 0.4-0.6's signatures. The implementation is testdoubles.GeoJsonRoi.
 */
interface ROI {
    /** JTS geometry in image pixels (QuPath 0.2+). */
    Geometry getGeometry()

    boolean isArea()

    double getArea()

    double getCentroidX()

    double getCentroidY()

    double getBoundsX()

    double getBoundsY()

    double getBoundsWidth()

    double getBoundsHeight()

    int getNumPoints()
}
