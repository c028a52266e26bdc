package qupath.lib.measurements

/**
 * TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's
 * qupath.lib.measurements.MeasurementList (0.4+ API: get/put/containsKey/remove by name; get
 * returns Double.NaN for a missing measurement, as QuPath's does). Values are doubles, as in
 * QuPath's list for annotations (MeasurementListType.GENERAL).
 */
class MeasurementList {
    private final Map<String, Double> values = new LinkedHashMap<>()

    double get(String name) { values.containsKey(name) ? values.get(name) : Double.NaN }

    void put(String name, double value) { values.put(name, value) }

    boolean containsKey(String name) { values.containsKey(name) }

    double remove(String name) {
        Double old = values.remove(name)
        return old == null ? Double.NaN : old
    }

    Set<String> keySet() { Collections.unmodifiableSet(values.keySet()) }

    boolean isEmpty() { values.isEmpty() }

    int size() { values.size() }

    Map<String, Number> asMap() { new LinkedHashMap<String, Number>(values) }
}
