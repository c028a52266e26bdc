package com.google.gson

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for Gson's JsonObject (QuPath bundles Gson); name only, for compiling. */
class JsonObject {
}
