package qupath.lib.gui.scripting

import qupath.lib.scripting.QP

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.gui.scripting.QPEx (QuPath's default static import for scripts). */
class QPEx extends QP {
}
