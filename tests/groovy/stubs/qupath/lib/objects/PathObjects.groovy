package qupath.lib.objects

import qupath.lib.measurements.MeasurementList
import qupath.lib.objects.classes.PathClass
import qupath.lib.roi.interfaces.ROI
import testdoubles.GeoJsonRoi

/**
 * TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's
 * qupath.lib.objects.PathObjects (0.4-0.6): the static factory for new objects.
 */
class PathObjects {
    static PathObject createAnnotationObject(ROI roi, PathClass pathClass, MeasurementList measurements) {
        def o = new PathAnnotationObject()
        o.geometry = ((GeoJsonRoi) roi).geoJson
        o.setPathClass(pathClass)
        if (measurements != null)
            measurements.keySet().each { o.getMeasurementList().put(it, measurements.get(it)) }
        return o
    }

    static PathObject createAnnotationObject(ROI roi, PathClass pathClass) { createAnnotationObject(roi, pathClass, null) }

    static PathObject createAnnotationObject(ROI roi) { createAnnotationObject(roi, null, null) }
}
