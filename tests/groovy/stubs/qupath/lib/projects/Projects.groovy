package qupath.lib.projects

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.projects.Projects. */
class Projects {
    static File getBaseDirectory(Project<?> project) { project.getPath().toFile().getParentFile() }
}
