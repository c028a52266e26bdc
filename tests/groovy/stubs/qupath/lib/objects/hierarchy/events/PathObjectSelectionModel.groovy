package qupath.lib.objects.hierarchy.events

import qupath.lib.objects.PathObject

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.objects.hierarchy.events.PathObjectSelectionModel. */
class PathObjectSelectionModel {
    private final Set<PathObject> selected = new LinkedHashSet<>()

    Set<PathObject> getSelectedObjects() { Collections.unmodifiableSet(selected) }

    PathObject getSelectedObject() { selected ? selected.last() : null }

    void setSelectedObjects(Collection<? extends PathObject> objects, PathObject primary = null) {
        selected.clear()
        selected.addAll(objects)
    }

    /** QuPath 0.4-0.6: make this the only (and primary) selected object; null clears the selection. */
    void setSelectedObject(PathObject pathObject) { setSelectedObject(pathObject, false) }

    void setSelectedObject(PathObject pathObject, boolean addToSelection) {
        if (!addToSelection)
            selected.clear()
        if (pathObject != null) {
            selected.remove(pathObject)
            selected.add(pathObject)
        }
    }

        void clearSelection() { selected.clear() }
}
