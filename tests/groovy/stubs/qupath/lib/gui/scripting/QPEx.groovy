package qupath.lib.gui.scripting

import qupath.lib.gui.viewer.QuPathViewer
import qupath.lib.scripting.QP
import testdoubles.World

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.gui.scripting.QPEx (QuPath's default static import for scripts). */
class QPEx extends QP {
    /** The viewer of the open image (null without one, e.g. in batch runs). */
    static QuPathViewer getCurrentViewer() { World.currentImageData == null ? null : World.viewer }
}
