package qupath.lib.scripting

/** TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.lib.scripting.ScriptAttributes (0.4+): binding names QuPath sets for a script. */
class ScriptAttributes {
    public static final String ARGS = "args"
    public static final String FILE_PATH = "qupath.script.file"
    public static final String BATCH_SIZE = "qupath.script.batchSize"
    public static final String BATCH_INDEX = "qupath.script.batchIndex"
}
