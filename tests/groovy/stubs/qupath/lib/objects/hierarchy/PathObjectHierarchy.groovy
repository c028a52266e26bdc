package qupath.lib.objects.hierarchy

import qupath.lib.objects.PathObject
import qupath.lib.objects.hierarchy.events.PathObjectSelectionModel
import testdoubles.World

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.objects.hierarchy.PathObjectHierarchy: a flat list (no parent/child maths). */
class PathObjectHierarchy {
    private final List<PathObject> objects = []
    private final PathObjectSelectionModel selectionModel = new PathObjectSelectionModel()

    Collection<PathObject> getAnnotationObjects() { objects.findAll { it.isAnnotation() } }

    Collection<PathObject> getDetectionObjects() { objects.findAll { it.isDetection() } }

    Collection<PathObject> getAllObjects(boolean includeRoot = false) { new ArrayList<>(objects) }

    int nObjects() { objects.size() }

    boolean addObjects(Collection<? extends PathObject> pathObjects) { objects.addAll(pathObjects) }

    boolean addObject(PathObject pathObject) { objects.add(pathObject) }

    void removeObjects(Collection<? extends PathObject> pathObjects, boolean keepChildren) {
        def gone = new HashSet<PathObject>(pathObjects)
        objects.removeAll { it in gone }
        selectionModel.setSelectedObjects(selectionModel.getSelectedObjects().findAll { !(it in gone) })
    }

    PathObjectSelectionModel getSelectionModel() { selectionModel }

    void fireHierarchyChangedEvent(Object source) { World.hierarchyUpdates++ }
}
