package qupath.lib.io

import testdoubles.GsonDouble

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.io.GsonTools: getInstance() gives a Gson look-alike. */
class GsonTools {
    static GsonDouble getInstance() { new GsonDouble() }

    static GsonDouble getInstance(boolean pretty) { new GsonDouble() }
}
