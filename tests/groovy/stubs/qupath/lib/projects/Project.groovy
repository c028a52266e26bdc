package qupath.lib.projects

import java.nio.file.Path

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.projects.Project (an interface there). */
class Project<T> {
    private final File file
    private final List<ProjectImageEntry<T>> entries

    Project(File projectFile, List<ProjectImageEntry<T>> entries) {
        this.file = projectFile
        this.entries = entries
    }

    /** The project.qpproj file. */
    Path getPath() { file.toPath() }

    List<ProjectImageEntry<T>> getImageList() { Collections.unmodifiableList(entries) }
}
