package qupath.lib.classifiers.pixel

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's PixelClassifier interface; name only, for compiling. */
interface PixelClassifier {
}
