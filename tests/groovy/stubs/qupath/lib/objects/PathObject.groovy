package qupath.lib.objects

import qupath.lib.measurements.MeasurementList
import qupath.lib.objects.classes.PathClass
import qupath.lib.roi.interfaces.ROI
import testdoubles.GeoJsonRoi
import testdoubles.World

/**
 * TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.objects.PathObject.
 * Keeps the GeoJSON geometry as given; getROI() makes a testdoubles.GeoJsonRoi of it (area and
 * centroid as JTS computes them). getMetadata() is QuPath 0.5+'s.
 */
abstract class PathObject {
    private UUID id = UUID.randomUUID()
    private String name
    private PathClass pathClass
    private PathObject parent
    private final Map<String, String> metadata = new LinkedHashMap<>()
    private final MeasurementList measurements = new MeasurementList()
    /** Test-double only: the GeoJSON geometry. */
    Map geometry

    UUID getID() { id }

    void setID(UUID id) { this.id = id }

    String getName() { name }

    void setName(String name) { this.name = name }

    PathClass getPathClass() { pathClass }

    void setPathClass(PathClass pathClass) { this.pathClass = pathClass }

    PathObject getParent() { parent }

    void setParent(PathObject parent) { this.parent = parent }

    /** QuPath 0.5+. The World's 'qupath-0.4' flavour has no such method (MissingMethodException). */
    Map<String, String> getMetadata() {
        if (World.flavour == 'qupath-0.4')
            throw new MissingMethodException('getMetadata', getClass(), [] as Object[])
        return metadata
    }

    /** QuPath 0.4+ (protected there). */
    protected Object retrieveMetadataValue(String key) { metadata.get(key) }

    /** Test-double only: the metadata map whatever the flavour. */
    Map<String, String> metadataForTest() { metadata }

    /**
     * QuPath's PathObject: objects without a ROI cannot be unlocked (UnsupportedOperationException);
     * PathROIObject (annotations, detections) overrides this with a real flag.
     */
    void setLocked(boolean locked) {
        if (!locked)
            throw new UnsupportedOperationException('Locked status cannot be unset!')
    }

    /** QuPath's PathObject: always locked unless a subclass (PathROIObject) says otherwise. */
    boolean isLocked() { true }

    boolean isAnnotation() { false }

    boolean isDetection() { false }

    boolean isRootObject() { false }

    boolean hasROI() { geometry != null }

    /** QuPath's ROI of the object (here computed from the GeoJSON geometry, see GeoJsonRoi). */
    ROI getROI() { geometry == null ? null : new GeoJsonRoi(geometry) }

    MeasurementList getMeasurementList() { measurements }

    @Override
    String toString() { (name ?: getClass().simpleName) + (pathClass ? ' (' + pathClass + ')' : '') }
}
