package testdoubles

import qupath.lib.objects.PathAnnotationObject
import qupath.lib.objects.PathDetectionObject
import qupath.lib.objects.PathObject
import qupath.lib.objects.classes.PathClass

/** Test helper (not QuPath): QuPath-dialect GeoJSON features <-> the PathObject test doubles. */
class GeoJsonDouble {
    static List<PathObject> toObjects(List features) {
        return features.collect { Map f ->
            Map props = (Map) (f.properties ?: [:])
            String type = props.objectType ?: (props.isCell ? 'cell' : 'annotation')
            PathObject o = type == 'annotation' ? new PathAnnotationObject() : new PathDetectionObject()
            // As QuPath's PathObjectTypeAdapter: a UUID "id" is kept; anything else (v0.2's type names,
            // junk) leaves the object its new random ID.
            if (f.id) {
                try {
                    o.setID(UUID.fromString(f.id.toString()))
                } catch (IllegalArgumentException ignored) {
                    // invalid ID: a random one, as QuPath
                }
            }
            o.geometry = (Map) f.geometry
            o.setName((String) props.name)
            def c = props.classification
            if (c instanceof Map && c.name)
                o.setPathClass(PathClass.fromString(c.name.toString()))
            else if (c instanceof Map && c.names)
                o.setPathClass(PathClass.fromString(c.names.join(': ')))
            ((Map) (props.metadata ?: [:])).each { k, v -> o.metadataForTest().put(k.toString(), v?.toString()) }
            if (props.isLocked == true)  // as QuPath's reader: only a true isLocked locks
                o.setLocked(true)
            def measurements = props.measurements
            if (measurements instanceof Map)  // QuPath 0.4+: {"name": value}; "NaN"/"Infinity" as strings
                measurements.each { k, v -> o.getMeasurementList().put(k.toString(), v instanceof Number ? v.doubleValue() : Double.valueOf(v.toString())) }
            else if (measurements instanceof List)  // QuPath 0.3: [{"name": ..., "value": ...}]
                measurements.each { Map m -> o.getMeasurementList().put(m.name.toString(), ((Number) m.value).doubleValue()) }
            return o
        }
    }

    static Map toFeature(PathObject o) {
        def props = [objectType: o.isAnnotation() ? 'annotation' : 'detection']
        if (o.getName() != null)
            props.name = o.getName()
        if (o.getPathClass() != null)
            props.classification = [name: o.getPathClass().getName(), color: [255, 0, 0]]
        if (!o.metadataForTest().isEmpty())
            props.metadata = o.metadataForTest()
        if (o.isLocked())
            props.isLocked = true
        if (!o.getMeasurementList().isEmpty())
            props.measurements = o.getMeasurementList().asMap()
        return [type: 'Feature', id: o.getID().toString(), geometry: o.geometry, properties: props]
    }

    static Map describe(PathObject o) {
        return [id      : o.getID().toString(), type: o.isAnnotation() ? 'annotation' : 'detection',
                name    : o.getName(), classification: o.getPathClass()?.getName(),
                metadata: o.metadataForTest(), geometryType: o.geometry?.type, locked: o.isLocked(), geometry: o.geometry,
                measurements: o.getMeasurementList().asMap()]
    }
}
