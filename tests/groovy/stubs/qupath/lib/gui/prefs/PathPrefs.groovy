package qupath.lib.gui.prefs

import testdoubles.PropertyDouble

/**
 * TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.gui.prefs.PathPrefs: persistent preferences,
 * kept in memory (testdoubles.World.prefs). The overloads mirror QuPath's, so an untyped null
 * default is ambiguous here exactly as it is in QuPath.
 */
class PathPrefs {
    static PropertyDouble createPersistentPreference(String name, String defaultValue) { new PropertyDouble(name, defaultValue) }

    static PropertyDouble createPersistentPreference(String name, boolean defaultValue) { new PropertyDouble(name, defaultValue) }

    static PropertyDouble createPersistentPreference(String name, int defaultValue) { new PropertyDouble(name, defaultValue) }

    static PropertyDouble createPersistentPreference(String name, double defaultValue) { new PropertyDouble(name, defaultValue) }

    static PropertyDouble scriptsPathProperty() { new PropertyDouble("scriptsPath", null) }

    static PropertyDouble userPathProperty() { new PropertyDouble("userPath", null) }
}
