package qupath.lib.projects

import qupath.lib.objects.hierarchy.PathObjectHierarchy

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.projects.ProjectImageEntry (an interface there). */
class ProjectImageEntry<T> {
    private final String id
    private final String imageName
    private final List<URI> uris
    private final PathObjectHierarchy hierarchy

    ProjectImageEntry(String id, String imageName, List<URI> uris, PathObjectHierarchy hierarchy) {
        this.id = id
        this.imageName = imageName
        this.uris = uris
        this.hierarchy = hierarchy
    }

    String getID() { id }

    String getImageName() { imageName }

    Collection<URI> getURIs() { Collections.unmodifiableList(uris) }

    /** QuPath reads the saved data file; the double returns the scenario's objects. */
    PathObjectHierarchy readHierarchy() throws IOException { hierarchy }
}
