package qupath.fx.dialogs

/**
 * TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.fx.dialogs.Dialogs (QuPath 0.5+).
 * Same recording double as the QuPath 0.4 stand-in (qupath.lib.gui.dialogs.Dialogs), whose static
 * methods it inherits: the scripts only use the methods both versions' Dialogs have.
 */
class Dialogs extends qupath.lib.gui.dialogs.Dialogs {
}
