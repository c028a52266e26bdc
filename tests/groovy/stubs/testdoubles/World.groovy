package testdoubles

import qupath.lib.gui.viewer.QuPathViewer
import qupath.lib.images.ImageData
import qupath.lib.images.servers.ImageServer
import qupath.lib.objects.PathObject
import qupath.lib.objects.hierarchy.PathObjectHierarchy
import qupath.lib.projects.Project
import qupath.lib.projects.ProjectImageEntry

/**
 * Test helper (not QuPath): the state the QuPath test doubles share during one scripted run,
 * and the record of what a script did (dialogs shown, objects added/removed, preferences set).
 */
class World {
    static String flavour = 'qupath-0.5+'
    static Project project
    static ProjectImageEntry currentEntry
    static ImageData currentImageData
    static Map<String, String> prefs = [:]
    static List<Object> dialogAnswers = []
    static List<Map> dialogs = []
    static List<Map> exports = []
    static List<PathObject> added = []
    static List<PathObject> removed = []
    static int hierarchyUpdates = 0
    static QuPathViewer viewer = new QuPathViewer()
    static List<List<Double>> centered = []

    /** Set up from a scenario map (see tests/groovy/Harness.groovy). */
    static void reset(Map scenario) {
        flavour = (String) (scenario.flavour ?: 'qupath-0.5+')
        prefs = new LinkedHashMap<String, String>((Map) (scenario.prefs ?: [:]))
        dialogAnswers = new ArrayList<Object>((List) (scenario.dialogAnswers ?: []))
        dialogs = []
        exports = []
        added = []
        removed = []
        hierarchyUpdates = 0
        viewer = new QuPathViewer()
        centered = []
        project = null
        currentEntry = null
        currentImageData = null
        Map<String, List> entryObjects = (Map) (scenario.entryObjects ?: [:])
        if (scenario.project) {
            project = readProject(new File((String) scenario.project), entryObjects)
            if (scenario.currentEntry != null) {
                currentEntry = project.getImageList().find { it.getID() == scenario.currentEntry.toString() }
                if (currentEntry == null)
                    throw new IllegalArgumentException("No entry " + scenario.currentEntry + " in " + scenario.project)
                currentImageData = new ImageData(currentEntry.readHierarchy(), new ImageServer(currentEntry.getURIs()))
            }
        } else if (scenario.image) {
            def hierarchy = new PathObjectHierarchy()
            hierarchy.addObjects(GeoJsonDouble.toObjects((List) (entryObjects['image'] ?: [])))
            currentImageData = new ImageData(hierarchy, new ImageServer([new File((String) scenario.image).toURI()]))
        }
        if (currentImageData != null && scenario.selected) {
            def wanted = ((List) scenario.selected).collect { it.toString() }
            def hierarchy = currentImageData.getHierarchy()
            hierarchy.getSelectionModel().setSelectedObjects(hierarchy.getAllObjects().findAll { it.getName() in wanted })
        }
    }

    /** A project from <folder>/project.qpproj (QuPath's JSON); objects per entry ID from the scenario. */
    static Project readProject(File folder, Map<String, List> entryObjects) {
        File file = new File(folder, 'project.qpproj')
        Map json = (Map) MiniJson.parse(file.getText('UTF-8'))
        def entries = ((List) json.images).collect { Map image ->
            String id = String.valueOf(((Number) image.entryID).longValue())
            def hierarchy = new PathObjectHierarchy()
            hierarchy.addObjects(GeoJsonDouble.toObjects((List) (entryObjects[id] ?: [])))
            List<URI> uris = findUris(image.serverBuilder).collect { new URI(it) }
            new ProjectImageEntry(id, (String) image.imageName, uris, hierarchy)
        }
        return new Project(file, entries)
    }

    private static List<String> findUris(Object builder) {
        if (builder instanceof Map)
            return (builder.uri ? [builder.uri.toString()] : []) + builder.values().collectMany { findUris(it) }
        if (builder instanceof List)
            return builder.collectMany { findUris(it) }
        return []
    }

    static Object nextAnswer(String kind, String title) {
        if (dialogAnswers.isEmpty())
            throw new IllegalStateException("Test double: no scripted answer left for " + kind + " '" + title + "'")
        return dialogAnswers.remove(0)
    }

    static void recordDialog(String kind, String title, Object message) {
        dialogs << [kind: kind, title: title, message: message?.toString()]
    }

    /** The record of a run, for the Python test to check. */
    static Map report() {
        def hierarchy = currentImageData?.getHierarchy()
        return [
                objects         : hierarchy == null ? [] : hierarchy.getAllObjects().collect { GeoJsonDouble.describe(it) },
                added           : added.collect { GeoJsonDouble.describe(it) },
                removed         : removed.collect { GeoJsonDouble.describe(it) },
                hierarchyUpdates: hierarchyUpdates,
                dialogs         : dialogs,
                prefs           : prefs,
                exports         : exports,
                selected        : hierarchy == null ? [] : hierarchy.getSelectionModel().getSelectedObjects().collect { it.getID().toString() },
                centered        : centered,
        ]
    }
}
