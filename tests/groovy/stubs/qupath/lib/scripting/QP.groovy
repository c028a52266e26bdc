package qupath.lib.scripting

import qupath.lib.images.ImageData
import qupath.lib.images.servers.ImageServer
import qupath.lib.io.PathIO
import qupath.lib.objects.PathObject
import qupath.lib.objects.classes.PathClass
import qupath.lib.objects.hierarchy.PathObjectHierarchy
import qupath.lib.projects.Project
import qupath.lib.projects.ProjectImageEntry
import testdoubles.World

/**
 * TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.scripting.QP (0.4-0.6).
 * Only the static methods the camseg scripts call, with QuPath's signatures; state lives in World.
 */
class QP {
    public static final String PROJECT_BASE_DIR = "{%PROJECT}"

    static Project getProject() { World.project }

    static ProjectImageEntry getProjectEntry() { World.currentEntry }

    static ImageData getCurrentImageData() { World.currentImageData }

    static PathObjectHierarchy getCurrentHierarchy() { World.currentImageData?.getHierarchy() }

    static ImageServer getCurrentServer() { World.currentImageData?.getServer() }

    static Collection<PathObject> getSelectedObjects() {
        def hierarchy = getCurrentHierarchy()
        return hierarchy == null ? null : hierarchy.getSelectionModel().getSelectedObjects()
    }

    static Collection<PathObject> getAnnotationObjects() { getCurrentHierarchy()?.getAnnotationObjects() ?: [] }

    static Collection<PathObject> getDetectionObjects() { getCurrentHierarchy()?.getDetectionObjects() ?: [] }

    static void addObjects(Collection<PathObject> pathObjects) {
        def hierarchy = getCurrentHierarchy()
        if (hierarchy == null)
            return
        World.added.addAll(pathObjects)
        hierarchy.addObjects(pathObjects)
    }

    static void addObjects(PathObject[] pathObjects) { addObjects(Arrays.asList(pathObjects)) }

    static void removeObjects(Collection<PathObject> pathObjects, boolean keepChildren) {
        def hierarchy = getCurrentHierarchy()
        if (hierarchy == null)
            return
        World.removed.addAll(pathObjects)
        hierarchy.removeObjects(pathObjects, keepChildren)
    }

    static void removeObjects(PathObject[] pathObjects, boolean keepChildren) {
        removeObjects(Arrays.asList(pathObjects), keepChildren)
    }

    /** QuPath's PathClass.fromString(name): one instance per name. */
    static PathClass getPathClass(String name) { PathClass.fromString(name) }

    static PathClass getPathClass(String name, Integer rgb) { PathClass.fromString(name, rgb) }

    static void selectObjects(Collection<? extends PathObject> pathObjects) {
        getCurrentHierarchy()?.getSelectionModel()?.setSelectedObjects(pathObjects, null)
    }

    static void selectObjects(PathObject... pathObjects) { selectObjects(Arrays.asList(pathObjects)) }

        static void fireHierarchyUpdate() {
        getCurrentHierarchy()?.fireHierarchyChangedEvent(QP)
    }

    static void exportObjectsToGeoJson(Collection<? extends PathObject> pathObjects, String path, String option,
                                       String... additionalOptions) throws IOException {
        def names = [option] + (additionalOptions as List)
        exportObjectsToGeoJson(pathObjects, path, names.collect { PathIO.GeoJsonExportOptions.valueOf(it) } as PathIO.GeoJsonExportOptions[])
    }

    static void exportObjectsToGeoJson(Collection<? extends PathObject> pathObjects, String path,
                                       PathIO.GeoJsonExportOptions... options) throws IOException {
        PathIO.exportObjectsAsGeoJSON(new File(path), pathObjects, options)
    }
}
