package qupath.lib.gui.viewer

import qupath.lib.roi.interfaces.ROI
import testdoubles.World

/**
 * TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's
 * qupath.lib.gui.viewer.QuPathViewer (0.4-0.6): centring records the position in the World.
 */
class QuPathViewer {
    private double xCenter = Double.NaN, yCenter = Double.NaN

    /** As QuPath's: centre on the ROI's centroid. */
    void centerROI(ROI roi) {
        if (roi == null)
            return
        setCenterPixelLocation(roi.getCentroidX(), roi.getCentroidY())
    }

    void setCenterPixelLocation(double x, double y) {
        xCenter = x
        yCenter = y
        World.centered << [x, y]
    }

    double getCenterPixelX() { xCenter }

    double getCenterPixelY() { yCenter }
}
