package qupath.lib.io

import java.nio.file.Path

import qupath.lib.objects.PathObject
import testdoubles.GeoJsonDouble
import testdoubles.MiniJson
import testdoubles.World

/**
 * TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.io.PathIO: GeoJSON in and out, in QuPath 0.4+'s
 * dialect (properties objectType, name, classification {name, color}, metadata).
 */
class PathIO {
    enum GeoJsonExportOptions { PRETTY_JSON, FEATURE_COLLECTION, EXCLUDE_MEASUREMENTS }

    static List<PathObject> readObjects(File file) throws IOException {
        if (!file.name.toLowerCase().endsWith('.geojson') && !file.name.toLowerCase().endsWith('.json'))
            throw new IOException("Test double: only GeoJSON is supported, not " + file)
        def json = MiniJson.parse(file.getText('UTF-8'))
        List features
        if (json instanceof List)
            features = json
        else if (json.type == 'FeatureCollection')
            features = json.features
        else
            features = [json]
        return GeoJsonDouble.toObjects(features)
    }

    static List<PathObject> readObjects(Path path) throws IOException { readObjects(path.toFile()) }

    static void exportObjectsAsGeoJSON(File file, Collection<? extends PathObject> pathObjects,
                                       GeoJsonExportOptions... options) throws IOException {
        def features = pathObjects.collect { GeoJsonDouble.toFeature(it) }
        def json = (GeoJsonExportOptions.FEATURE_COLLECTION in options) ?
                [type: 'FeatureCollection', features: features] : features
        file.setText(MiniJson.write(json), 'UTF-8')
        World.exports << [path: file.absolutePath, count: pathObjects.size()]
    }
}
